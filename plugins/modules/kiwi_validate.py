#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kiwi_validate
short_description: Validate a KIWI NG image description with KIWI's own loader, before anything is built
version_added: 0.1.0
description:
  - Loads a description with KIWI's C(XMLDescription(...).load()), which upgrades it to the current schema and
    applies the RelaxNG schema and the embedded Schematron rules, then runs the checks KIWI makes before a build
    that look only at the description (image version given, dracut modules in the package list, one build type, ...).
  - Errors come back as readable lines naming the element and attribute at fault and, with O(settings), the input
    that set them. The installed C(jing) makes RelaxNG errors precise; without it lxml's coarser errors are reported.
  - Also checks the attestation-critical settings (read-only erofs root via overlayroot, dm-verity over all blocks,
    UKI boot, panic on verity corruption, no initrd shell) and reports the missing ones in RV(unattestable).
  - Flags on its own (without the C(attestable.ami.image_description) role) what would undo the attestation, in
    RV(findings). Kernel arguments that open a shell (C(rd.break), C(init=), C(systemd.debug_shell), C(rd.shell)
    other than C(rd.shell=0), C(rd.debug), rescue/emergency targets) or weaken dm-verity (any
    C(rd.kiwi.verity_options) option but C(panic-on-corruption) and C(ignore-zero-blocks), since KIWI's
    kiwi-veritytab-setup.sh passes them to C(veritysetup open) through C(eval)), also when overlay files
    (C(root/etc/cmdline.d), C(root/etc/dracut.conf.d) C(kernel_cmdline)) add them; repositories whose content nobody
    verifies (rpm-md without C(package_gpgcheck="true") or C(repository_gpgcheck="true"), apt-deb with
    C(repository_gpgcheck="false")) or that are fetched over C(http://)/C(ftp://); operator access (openssh-server,
    amazon-ssm-agent, ec2-instance-connect, cloud-init and similar packages not C(<ignore>)d, getty/sshd/SSM/debug-shell
    units enabled by the overlay, presets or the description's scripts).
  - Severity V(unattestable) makes RV(attestable) false (and fails the task with O(require_attestable));
    V(warning) is reported as a task warning only. Warnings are plain http:// with signature checks
    (replayable metadata), unverified local repositories (C(dir://), C(file://), C(this://), C(iso://),
    C(obsrepositories:)), a console getty (no C(systemd.getty_auto=false)) and user login passwords.
    Packages that a collection pulls in as dependencies cannot be seen here; C(<ignore>) them.
  - Checks that every file the description references exists (C(editbootinstall)/C(editbootconfig) hooks,
    repository C(customize) scripts, C(<archive>)s, C(<file>)s, C(this://) repositories and signing keys) and fails
    naming each missing one; see O(check_host_paths) for absolute paths. Descriptions named C(config.xml) or
    C(*.kiwi) alike.
  - Also fails on files KIWI picks up by name that it would skip silently or fail on late - C(config.sh),
    C(images.sh), C(disk.sh), C(pre_disk_sync.sh), C(post_bootstrap.sh), C(config-overlay.sh),
    C(config-host-overlay.sh), the C(root/) overlay, C(root.tar.gz) and profile overlay directories that are
    dangling symbolic links, scripts that are not regular files, a C(root.tar.gz) that is not a readable tar
    archive - and warns when C(root/) hides a C(root.tar.gz).
  - Checks the description's C(schemaversion) against the schema the installed KIWI reads, first. KIWI upgrades
    older descriptions but not newer ones, so a newer one fails with both versions and the KIWI release needed.
    Run it where the build runs (e.g. delegated to the builder) to validate with the builder's own KIWI;
    it runs on Python 3.9. Attributes KIWI added within a schema version are named with the KIWI release that
    knows them; an attestable description (C(overlayroot_readonly_filesystem), C(<dracut uefi="true">)) needs
    KIWI 10.2.23 or newer.
  - The description digest counts FIFOs, sockets and device nodes by their kind, without reading them, and warns.
  - Needs the C(kiwi) Python package where it runs. Changes nothing.
author:
  - Attestable AMI maintainers (@attestable)
extends_documentation_fragment:
  - attestable.ami.attributes
options:
  description:
    description:
      - The description directory (holding C(appliance.kiwi) or another C(*.kiwi) / C(config.xml)), or the KIWI file.
    type: path
    required: true
  profiles:
    description: KIWI profiles to select, as C(kiwi-ng --profile) would.
    type: list
    elements: str
    default: []
  require_attestable:
    description:
      - Fail when an attestation-critical setting is missing or a finding of severity V(unattestable) is found.
        With V(false) they are only warnings.
    type: bool
    default: false
  check_host_paths:
    description:
      - Also check referenced absolute paths outside the description directory (C(dir://) repositories,
        C(file:///) signing keys, absolute hook, archive and file paths). They name files on the host that builds,
        so set it where the module runs on the builder. Paths inside the description are always checked.
    type: bool
    default: false
  settings:
    description:
      - Maps description locations to the inputs that set them, so an error can name the input to fix.
      - Keys are element paths such as C(image/preferences/type), C(path@attribute) such as
        C(image/preferences/type@erofscompression), or C(@attribute); values are the input names.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Reads only.
requirements:
  - kiwi (the KIWI NG Python package) on the host the module runs on
  - jing (optional) for precise RelaxNG error messages
"""

EXAMPLES = r"""
- name: Validate the rendered description on the controller
  attestable.ami.kiwi_validate:
    description: build/description
    require_attestable: true
  delegate_to: localhost
  register: validation

- name: Show which packages the image will hold
  ansible.builtin.debug:
    var: validation.description.packages

- name: Validate again on the builder, with its own KIWI and the host paths (signing keys, dir:// repositories)
  attestable.ami.kiwi_validate:
    description: /var/tmp/description
    check_host_paths: true
    require_attestable: true
  delegate_to: "{{ builder_host }}"
  register: builder_validation

- name: Show what would make the image unattestable
  ansible.builtin.debug:
    msg: "{{ item.setting }} {{ item.value }}: {{ item.reason }} ({{ item.severity }})"
  loop: "{{ validation.findings }}"
"""

RETURN = r"""
description:
  description: What KIWI loaded.
  returned: success
  type: dict
  contains:
    config_file:
      description: The KIWI file that was loaded.
      type: str
    name:
      description: Image name.
      type: str
    version:
      description: Image version.
      type: str
    build_type:
      description: Attributes of the selected C(<type>) (image, firmware, overlayroot, verity_blocks, kernelcmdline, ...).
      type: dict
    bootloader:
      description: Boot loader name.
      type: str
    dracut_uefi:
      description: Whether dracut builds a UKI.
      type: bool
    packages:
      description: Image packages (sorted).
      type: list
      elements: str
    repositories:
      description: Repositories (alias, type, source, gpg checks).
      type: list
      elements: dict
  sample: {"name": "al2023-attestable", "version": "1.0.0", "build_type": {"image": "oem", "verity_blocks": "all"}}
description_digest:
  description: SHA-256 over every file of the description (the digest M(attestable.ami.kiwi_build) keys its idempotence on).
  returned: success
  type: str
  sample: sha256:0b5c...
kiwi_version:
  description: The KIWI version that validated the description (or refused its schema version).
  returned: success, and when the schema version is too new
  type: str
  sample: 11.1.6
schema_version:
  description: The C(schemaversion) the description declares.
  returned: success, and when the schema version is too new
  type: str
  sample: "8.3"
kiwi_schema_version:
  description: The schema version the installed KIWI reads (and upgrades older descriptions to).
  returned: success, and when the schema version is too new
  type: str
  sample: "8.5"
attestable:
  description: Whether every attestation-critical setting is present and no finding of severity V(unattestable) was found.
  returned: success
  type: bool
unattestable:
  description: The missing attestation-critical settings and the V(unattestable) findings, one readable line each.
  returned: success
  type: list
  elements: str
findings:
  description: Everything flagged, missing settings included, one dict each.
  returned: success
  type: list
  elements: dict
  contains:
    setting:
      description: Where it is set, e.g. C(kernelcmdline), C(repository[alias]@package_gpgcheck), C(packages), C(config.sh).
      type: str
    value:
      description: The value at fault, e.g. C(rd.break) or C(openssh-server).
      type: str
    reason:
      description: Why it matters.
      type: str
    severity:
      description: V(unattestable) or V(warning).
      type: str
  sample: [{"setting": "kernelcmdline", "value": "rd.break", "reason": "drops to a shell in the initrd (dracut breakpoint)",
            "severity": "unattestable"}]
references:
  description: The files and directories the description references (see the description above), and whether they exist.
  returned: success
  type: list
  elements: dict
  contains:
    element:
      description: The element and attribute, e.g. C(<type editbootinstall>).
      type: str
    path:
      description: The path as written.
      type: str
    resolved:
      description: The path it names here.
      type: str
    exists:
      description: Whether it exists; null when not checked (an absolute path without O(check_host_paths)).
      type: bool
  sample: [{"element": "<type editbootinstall>", "path": "edit_boot_install.sh", "exists": true}]
errors:
  description: On failure, one readable line per problem KIWI found.
  returned: failure
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kiwi_description, findings as kiwi_findings
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import references as kiwi_references


def _missing_setting_findings(summary):
    build = summary.get("build_type") or {}
    uki = "%s, dracut uefi=%s" % (summary.get("bootloader"), summary.get("dracut_uefi"))
    values = {"overlayroot": build.get("overlayroot"), "erofs": build.get("overlayroot_readonly_filesystem"),
              "verity": build.get("verity_blocks"), "uki": uki,
              "verity_panic": build.get("kernelcmdline"), "no_initrd_shell": build.get("kernelcmdline")}
    return [kiwi_findings.finding(kiwi_description.SETTING_LOCATIONS[key],
                                  "(not set)" if values[key] is None else str(values[key]), text)
            for key, text in kiwi_description.missing_settings(summary)]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            description=dict(type="path", required=True),
            profiles=dict(type="list", elements="str", default=[]),
            require_attestable=dict(type="bool", default=False),
            settings=dict(type="dict", default={}),
            check_host_paths=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    path = module.params["description"]
    skipped = []
    try:
        summary = kiwi_description.load_description(path, settings=module.params["settings"],
                                                    profiles=module.params["profiles"],
                                                    check_host_paths=module.params["check_host_paths"])
        digest = kiwi_description.description_digest(path, skipped=skipped)
    except kiwi_description.KiwiMissingError as exc:
        module.fail_json(msg="kiwi_validate: %s" % exc, description=path)
    except kiwi_description.DescriptionError as exc:
        module.fail_json(msg="kiwi_validate: %s" % exc, errors=exc.messages, description=path, **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg="kiwi_validate: cannot read description %s: %s" % (path, exc), description=path)
    for line in kiwi_references.present_warnings(os.path.dirname(os.path.abspath(summary["config_file"]))):
        module.warn("the description: %s" % line)
    for rel, kind in skipped:
        module.warn("the description holds %s, a %s: the digest counts it by its kind without reading it, and "
                    "KIWI copies it into the image if it is in root/" % (rel, kind))

    description_dir = os.path.dirname(os.path.abspath(summary["config_file"]))
    missing = _missing_setting_findings(summary)
    flagged = kiwi_findings.description_findings(summary, description_dir)
    findings = missing + flagged
    unattestable = [item["reason"] for item in missing]
    unattestable += [kiwi_findings.line(item) for item in flagged if item["severity"] == kiwi_findings.UNATTESTABLE]
    if unattestable and module.params["require_attestable"]:
        module.fail_json(msg="kiwi_validate: %s is not attestable: %s" % (summary["config_file"], "; ".join(unattestable)),
                         errors=unattestable, description=path, findings=findings, attestable=False)
    for line in unattestable:
        module.warn("the description is not attestable: %s" % line)
    for item in findings:
        if item["severity"] == kiwi_findings.WARNING:
            module.warn("the description: %s" % kiwi_findings.line(item))
    module.exit_json(changed=False, description=summary, description_digest=digest,
                     kiwi_version=summary["kiwi_version"], schema_version=summary.get("schema_version"),
                     kiwi_schema_version=summary.get("kiwi_schema_version"), references=summary.get("references", []),
                     attestable=not unattestable, unattestable=unattestable, findings=findings)


if __name__ == "__main__":
    main()
