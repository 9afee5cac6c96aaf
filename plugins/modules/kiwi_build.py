#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kiwi_build
short_description: Build an image with C(kiwi-ng system build), once per description
version_added: 0.1.0
description:
  - Runs C(kiwi-ng system build) on a description and returns what it produced, read from KIWI's
    C(kiwi.result.json) and from the files the description's C(edit_boot_install.sh) hook puts next to the disk
    (the UKI, its C(/etc/veritytab), C(pcr_measurements.json)).
  - When the hook does not copy the UKI beside the disk (AWS's sample hook and most users' hooks only move it
    inside the ESP), the module reads C(\EFI\BOOT\BOOTX64.EFI) (or C(BOOTAA64.EFI)) from the built disk's EFI
    System partition itself (GPT and FAT read in Python; no mount, no vfat driver, no mtools) and writes it beside
    the disk; RV(uki_source) says which. When the hook did copy one, it must equal the one the ESP boots. A binary
    there that is not a UKI (systemd-boot, GRUB) is not returned as the UKI.
  - Without a vfat driver in the kernel (no C(vfat) in C(/proc/filesystems)), KIWI can only mount the ESP
    through mount helpers that copy it into a ramfs, and C(bootctl) refuses such a mount as ESP ("is not a FAT
    EFI System Partition"); the module then runs kiwi-ng with C(SYSTEMD_RELAX_ESP_CHECKS=1) (unless
    O(environment) sets it) and returns it in RV(environment).
  - KIWI's full log is written to O(log_file) line by line while the build runs, so a playbook that starts the
    task with C(async)/C(poll=0) can show its last lines (see the examples).
  - Idempotent. The target directory records which description (a SHA-256 digest over all its files) and which
    options produced a successful build; the same inputs again return C(changed=false) and the recorded results
    without building. Anything else cleans the target directory's earlier build and builds again.
  - A failed build fails the task with KIWI's error lines and the log path.
  - O(owner), O(group), O(mode) and the other file options apply to the files the build produced (RV(artifacts),
    RV(uki), the veritytab beside the disk, O(log_file)), also when an earlier build is reused (a difference in them
    alone reports changed). KIWI runs as root, so this is how its outputs become another user's.
  - Must run as root, because KIWI mounts, uses loop devices and chroots; use C(become=true). KIWI builds for the
    architecture of the host it runs on.
author:
  - Attestable AMI maintainers (@attestable)
extends_documentation_fragment:
  - attestable.ami.attributes
  - ansible.builtin.files
options:
  description:
    description:
      - The description directory, e.g. as the C(attestable.ami.image_description) role renders it
        (and M(attestable.ami.kiwi_validate) checks it).
    type: path
    required: true
  target_dir:
    description:
      - Directory for the build. Created if missing. It must be empty or hold an earlier build of this module;
        an earlier build that does not match is removed before building.
    type: path
    required: true
  profiles:
    description: KIWI profiles to build (C(--profile)).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds the build may take; then KIWI is stopped (SIGTERM, then SIGKILL) and the task fails.
    type: int
    default: 7200
  force:
    description: Build even when O(target_dir) already holds a build of the same inputs.
    type: bool
    default: false
  log_file:
    description: Where KIWI writes its log while it builds (emptied at the start of each build). Default C(<target_dir>/kiwi-build.log).
    type: path
  kiwi_args:
    description:
      - Further arguments of C(kiwi-ng system build), e.g. V(--set-type-attr) V(verity_blocks=all), V(--ignore-repos-used-for-build).
      - They are part of what identifies a build (changing them rebuilds).
    type: list
    elements: str
    default: []
  config:
    description:
      - A KIWI runtime configuration file (C(kiwi-ng --config)), e.g. one with C(xz) C(options) C(-0 --threads=0)
        for fast compression. Its content is part of what identifies a build.
    type: path
  kiwi_ng:
    description: The C(kiwi-ng) executable. Default the one beside the module's Python (a virtualenv), else on C(PATH).
    type: path
  environment:
    description:
      - Extra environment variables for C(kiwi-ng) (names of letters, digits and C(_); string values), e.g. a proxy.
      - When given, they are part of what identifies a build (changing them rebuilds).
      - They are returned in RV(environment), so do not put secrets here.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    details: Reports whether a build would run (C(changed)) and why, without building.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Keyed on the description digest, profiles, O(kiwi_args) and the O(config) content.
requirements:
  - kiwi (KIWI NG) and its host tools on the host that builds; root
"""

EXAMPLES = r"""
- name: Build the image
  attestable.ami.kiwi_build:
    description: /var/tmp/description
    target_dir: /var/tmp/image
  become: true
  register: build

- name: Build through a proxy, and say where the UKI came from
  attestable.ami.kiwi_build:
    description: /var/tmp/description
    target_dir: /var/tmp/image
    environment:
      https_proxy: http://proxy.internal:3128
  become: true
  register: build

- name: The UKI to measure (read from the disk's ESP when the hook left none beside it)
  ansible.builtin.debug:
    msg: "{{ build.uki }} ({{ build.uki_source }})"

- name: Start a long build in the background
  attestable.ami.kiwi_build:
    description: /var/tmp/description
    target_dir: /var/tmp/image
    log_file: /var/tmp/kiwi-build.log
  become: true
  async: 7200
  poll: 0
  register: build_job

# follow_build.yml, included until the build ends: it prints KIWI's last log lines every 30 seconds.
#   - name: Check on the build
#     ansible.builtin.async_status:
#       jid: "{{ build_job.ansible_job_id }}"
#     become: true
#     register: build
#   - name: Show the last lines of KIWI's log
#     ansible.builtin.command: tail -n 3 /var/tmp/kiwi-build.log
#     changed_when: false
#     when: not build.finished
#   - name: Look again in 30 seconds
#     when: not build.finished
#     block:
#       - name: Wait 30 seconds
#         ansible.builtin.wait_for:
#           timeout: 30
#       - name: Follow the build
#         ansible.builtin.include_tasks: follow_build.yml
- name: Follow the build
  ansible.builtin.include_tasks: follow_build.yml

- name: Would a build run?
  attestable.ami.kiwi_build:
    description: /var/tmp/description
    target_dir: /var/tmp/image
  check_mode: true
  register: planned
"""

RETURN = r"""
disk:
  description: The raw disk image (KIWI's C(disk_image)); null for image types that make no disk.
  returned: success
  type: str
  sample: /var/tmp/image/al2023-attestable.x86_64-1.0.0.raw
image:
  description: The main artifact (the disk, or the filesystem image / root archive of other image types).
  returned: success
  type: str
uki:
  description:
    - The final EFI binary the firmware boots, beside the disk (C(<disk stem>.efi)); null when the disk has no GPT
      EFI System partition booting C(EFI/BOOT/BOOTX64.EFI)/C(BOOTAA64.EFI) and the hook copied none, or when that
      binary is not a UKI (no C(.linux) section, e.g. systemd-boot or GRUB that the hook left there).
  returned: success
  type: str
  sample: /var/tmp/image/al2023-attestable.x86_64-1.0.0.efi
uki_source:
  description:
    - Where RV(uki) came from. V(hook) the description's hook copied it beside the disk (checked against the ESP);
      V(esp) read from C(\EFI\BOOT\BOOT{X64,AA64}.EFI) of the built disk's ESP; null without a UKI.
  returned: success
  type: str
  sample: esp
environment:
  description:
    - The variables added to kiwi-ng's environment (O(environment) plus C(SYSTEMD_RELAX_ESP_CHECKS=1) when the
      kernel has no vfat).
  returned: always
  type: dict
  sample: {"SYSTEMD_RELAX_ESP_CHECKS": "1"}
veritytab:
  description:
    - The dm-verity parameters of the read-only root; null without verity.
    - From the veritytab the UKI's initrd carries when the hook copied it (C(source=initrd)), checked against
      KIWI's log; else from KIWI's log (C(source=log)).
  returned: success
  type: dict
  contains:
    root_hash:
      description: The root hash (hex).
      type: str
    hash_offset:
      description: Byte offset of the hash tree in the read-only partition (C(veritysetup --hash-offset)).
      type: int
    hash_block_size:
      description: Hash block size in bytes.
      type: int
    path:
      description: The copied veritytab (C(source=initrd) only).
      type: str
    source:
      description: V(initrd) or V(log).
      type: str
root_hash:
  description: RV(veritytab.root_hash), or null.
  returned: success
  type: str
packages:
  description: The image's packages (from KIWI's C(.packages) file).
  returned: success
  type: list
  elements: dict
  sample: [{"name": "kernel", "version": "6.1.119-129.201.amzn2023", "arch": "x86_64"}]
pcr_measurements:
  description: The image's own C(nitro-tpm-pcr-compute) output (HashAlgorithm, PCR4, PCR7, PCR12) when the hook ran it; else null.
  returned: success
  type: dict
kiwi_version:
  description: Version of the C(kiwi-ng) that built (or would build).
  returned: success
  type: str
  sample: 11.1.6
description_digest:
  description: SHA-256 over every file of the description.
  returned: always
  type: str
  sample: sha256:0b5c...
artifacts:
  description: Every file KIWI listed in C(kiwi.result.json), by result name.
  returned: success
  type: dict
result:
  description: The content of C(kiwi.result.json).
  returned: success
  type: dict
log_file:
  description: KIWI's log of the build.
  returned: always
  type: str
reason:
  description: Why a build ran (or would run), or that the target directory already held it.
  returned: always
  type: str
error_lines:
  description: On failure, KIWI's error lines.
  returned: failure
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import build as kb
from ansible_collections.attestable.ami.plugins.module_utils._kiwi.description import (
    DescriptionError,
    description_digest,
    find_config_file,
)


def kiwi_version(module, kiwi_ng):
    rc, out, err = module.run_command([kiwi_ng, "--version"])
    if rc != 0:
        module.fail_json(msg="kiwi_build: %s --version failed: %s" % (kiwi_ng, (err or out).strip()))
    return out.strip().split()[-1] if out.strip() else None


def file_options(module, result, changed):
    """Apply owner/group/mode/... (add_file_common_args) to the build's files; True when anything changed."""
    for path in kb.output_files(result):
        changed = atomic_file.set_attributes(module, path, False) or changed
    return changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            description=dict(type="path", required=True),
            target_dir=dict(type="path", required=True),
            profiles=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=7200),
            force=dict(type="bool", default=False),
            log_file=dict(type="path"),
            kiwi_args=dict(type="list", elements="str", default=[]),
            config=dict(type="path"),
            kiwi_ng=dict(type="path"),
            environment=dict(type="dict", default={}),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    params = module.params
    description = os.path.abspath(params["description"])
    target_dir = os.path.abspath(params["target_dir"])
    log_file = os.path.abspath(params["log_file"] or os.path.join(target_dir, "kiwi-build.log"))
    if params["timeout"] <= 0:
        module.fail_json(msg="kiwi_build: timeout must be a positive number of seconds, got %d" % params["timeout"])
    if params["config"] and not os.path.isfile(params["config"]):
        module.fail_json(msg="kiwi_build: config %s is not a file (expected a KIWI runtime configuration YAML)"
                         % params["config"])
    try:
        find_config_file(description)
        digest = description_digest(description)
    except DescriptionError as exc:
        module.fail_json(msg="kiwi_build: %s" % exc, description_digest=None, log_file=log_file, reason="")
    except (IOError, OSError) as exc:
        module.fail_json(msg="kiwi_build: cannot read description %s: %s" % (description, exc),
                         description_digest=None, log_file=log_file, reason="")

    try:
        user_environment = kb.environment_strings(params["environment"])
        environment = kb.build_environment(user_environment)
    except kb.KiwiBuildError as exc:
        module.fail_json(msg="kiwi_build: %s" % exc, description_digest=digest, log_file=log_file, reason="")
    key = kb.build_key(digest, params["profiles"], params["kiwi_args"], kb.file_digest(params["config"]),
                       user_environment)
    current, previous = kb.up_to_date(target_dir, key)
    if current and not params["force"]:
        result = dict(previous)
        result.setdefault("uki_source", "hook" if result.get("uki") else None)  # recorded before uki_source
        result.update(description_digest=digest, target_dir=target_dir, environment=environment,
                      reason="%s already holds a successful build of this description" % target_dir)
        module.exit_json(changed=file_options(module, result, False), **result)

    reason = "force: true" if current else previous
    common = dict(description_digest=digest, log_file=log_file, target_dir=target_dir, reason=reason,
                  environment=environment)
    try:
        kb.check_target_dir(target_dir, log_file)
    except kb.KiwiBuildError as exc:
        module.fail_json(msg="kiwi_build: %s" % exc, **common)
    if not module.check_mode and os.geteuid() != 0:
        module.fail_json(msg="kiwi_build: kiwi-ng system build must run as root (it mounts, uses loop devices and "
                         "chroots); run the task with become: true", **common)
    kiwi_ng = kb.find_kiwi_ng(params["kiwi_ng"])
    if not kiwi_ng:
        module.fail_json(msg="kiwi_build: kiwi-ng not found%s: install KIWI NG (dnf install kiwi-cli python3-kiwi, "
                         "or pip install kiwi)" % (" at %s" % params["kiwi_ng"] if params["kiwi_ng"] else " on PATH"),
                         **common)
    common["kiwi_version"] = kiwi_version(module, kiwi_ng)
    if module.check_mode:
        common["reason"] = "a build would run: %s" % reason
        module.exit_json(changed=True, **common)

    try:
        kb.clean_previous_build(target_dir)
        if not os.path.isdir(target_dir):
            os.makedirs(target_dir)
        log_dir = os.path.dirname(log_file)
        if not os.path.isdir(log_dir):
            os.makedirs(log_dir)
        command = kb.build_command(kiwi_ng, description, target_dir, log_file, params["profiles"],
                                   params["kiwi_args"], params["config"])
        rc = kb.run_build(command, log_file, timeout=params["timeout"], environment=environment)
        if rc != 0:
            lines = kb.error_lines(log_file, log_file + ".stderr")
            module.fail_json(msg="kiwi_build: kiwi-ng system build failed (exit %d); log: %s; last errors: %s"
                             % (rc, log_file, " | ".join(lines[-5:])), error_lines=lines, rc=rc, cmd=command,
                             **common)
        result = kb.collect(target_dir, log_file)
        result.update(common)
        kb.write_marker(target_dir, key, result)
        file_options(module, result, True)
    except kb.KiwiBuildError as exc:
        module.fail_json(msg="kiwi_build: %s (log: %s)" % (exc, exc.log_file or log_file),
                         error_lines=exc.lines, **common)
    except (IOError, OSError) as exc:
        module.fail_json(msg="kiwi_build: %s" % exc, **common)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
