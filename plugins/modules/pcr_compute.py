#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pcr_compute
short_description: Compute the NitroTPM reference measurements (PCR4, PCR7, PCR12) of a UKI boot chain
version_added: 0.1.0
description:
  - Predicts the PCR values a NitroTPM (or any TCG2 UEFI firmware) measures when it boots O(images), as
    AWS's C(nitro-tpm-pcr-compute) reports them, for use in KMS key policies.
  - PCR4 holds the Authenticode digest of each image in load order and, for a Unified Kernel Image whose
    systemd-stub is older than 258 (older than 252 under Secure Boot), of the kernel in its C(.linux) section.
    The stub version comes from the UKI's C(.sdmagic) section, or is 252 for an Amazon Linux 2023 C(.osrel);
    a UKI that tells neither is an error, as with AWS's tool.
  - PCR7 holds the Secure Boot state and variables and, under Secure Boot, the db certificate that authorised
    each image.
  - PCR12 stays zero for a UKI booted with its own command line. A standard-boot key policy must bind it
    (advisory GHSA-xrv8-2pf5-f3q7), so a tool that reports no PCR12 (older than 1.1.0) is an error.
  - The built-in Python engine runs on the controller and on an AL2023 builder alike, for any architecture.
    With O(engine=auto) it is cross-checked against C(nitro-tpm-pcr-compute) whenever that tool is installed,
    and the task fails if the two disagree.
  - Every extend is listed in RV(events) with what was hashed, to explain a value (for example to debug a KMS
    denial).
author:
  - Attestable AMI maintainers (@attestable)
requirements:
  - pefile (for O(engine=auto) and O(engine=python))
  - cryptography (for Secure Boot, when O(pk) is given)
extends_documentation_fragment:
  - attestable.ami.attributes
  - ansible.builtin.files
options:
  images:
    description:
      - PE32+ EFI images in the order the firmware loads them (usually one UKI).
      - Measure the final artifact; signing (sbsign) changes the digest.
    type: list
    elements: path
    required: true
  pk:
    description:
      - File holding the PK variable's data (raw EFI_SIGNATURE_LIST bytes, exactly as enrolled).
      - Giving O(pk) means Secure Boot is enabled, as with the tool's C(--PK).
    type: path
  kek:
    description: File holding the KEK variable's data (EFI_SIGNATURE_LIST bytes). Omitted means an empty variable.
    type: path
  db:
    description:
      - File holding the db variable's data (one or more EFI_SIGNATURE_LISTs).
      - Under Secure Boot each image must be signed by a certificate that is an X.509 entry of db (the firmware
        measures that entry into PCR7). An image that is not is an error here; AWS's tool measures no
        authority event for it instead, and the firmware would refuse to boot it.
    type: path
  dbx:
    description:
      - File holding the dbx variable's data. Tools that build variable stores may enroll a dummy dbx;
        pass exactly what is enrolled.
    type: path
  engine:
    description:
      - V(auto) runs the Python engine, and also C(nitro-tpm-pcr-compute) when it is installed (on PATH or
        at O(tool_path)); the results must agree.
      - V(python) runs only the built-in engine.
      - V(nitro-tpm-pcr-compute) runs only AWS's tool and fails when it is not installed.
    type: str
    choices: [auto, python, nitro-tpm-pcr-compute]
    default: auto
  tool_path:
    description:
      - Path of the C(nitro-tpm-pcr-compute) executable. Default is to look it up on PATH.
    type: path
  banks:
    description:
      - Hash banks to compute. RV(measurements) is always SHA-384; V(sha256) adds the SHA-256 bank to RV(banks)
        (useful to compare with a TPM's SHA-256 bank). Only the Python engine computes V(sha256).
    type: list
    elements: str
    choices: [sha384, sha256]
    default: [sha384]
  dest:
    description:
      - 'Write the measurements to this file as JSON, in the tool''s own output format
        C({"Measurements": {"HashAlgorithm": "SHA384", "PCR4": ..., "PCR7": ..., "PCR12": ...}}).'
      - The file is rewritten (and the task reports changed) only when its JSON content differs, in one rename;
        an existing file keeps its permission bits.
      - It must be a regular file or a new path in an existing directory; a directory, FIFO, socket, device or
        symbolic link is refused.
      - O(mode), O(owner), O(group) and the other file options apply to this file; a difference in them alone also
        reports changed. A new file without O(mode) gets C(0644).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the O(dest) file before and after.
  idempotent:
    support: full
    details: Only O(dest) is written, and only when its content changes.
seealso:
  - name: Compute PCR measurements for a custom AMI
    description: AWS's guide to nitro-tpm-pcr-compute.
    link: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/create-pcr-compute.html
"""

EXAMPLES = r"""
- name: Compute the reference measurements of a UKI (standard boot)
  attestable.ami.pcr_compute:
    images:
      - build/image.efi
    dest: artifacts/measurements.json
  register: pcr

- name: Compute them for a signed UKI under Secure Boot, with the SHA-256 bank too
  attestable.ami.pcr_compute:
    images: [build/image.signed.efi]
    pk: keys/PK.esl
    kek: keys/KEK.esl
    db: keys/db.esl
    dbx: keys/dbx.esl
    banks: [sha384, sha256]
    engine: python

- name: Show why PCR4 has its value
  ansible.builtin.debug:
    msg: "{{ pcr.events | selectattr('pcr', 'equalto', 4) | list }}"
"""

RETURN = r"""
measurements:
  description: The SHA-384 PCR values in nitro-tpm-pcr-compute's format (lowercase hex).
  returned: always
  type: dict
  sample:
    HashAlgorithm: SHA384
    PCR4: 409b0845e19393e8fc09178545027f8a7e7d209ac15e8572ade37acb1ffae13fbc8bf6b61f4779aeea3b4f8ce08d2b4f
    PCR7: 98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35
    PCR12: "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
banks:
  description: PCR4, PCR7 and PCR12 per hash bank asked for in O(banks) (lowercase hex).
  returned: when the Python engine ran
  type: dict
  sample: {"sha256": {"PCR4": "c5ffec0f...", "PCR7": "65caf8dd...", "PCR12": "0000..."}, "sha384": {}}
events:
  description:
    - Every extend of PCR4 and PCR7 in order, as the Python engine predicts it; empty when it did not run.
  returned: always
  type: list
  elements: dict
  contains:
    pcr:
      description: The PCR index.
      type: int
    type:
      description: The TCG event type, for example V(EV_EFI_BOOT_SERVICES_APPLICATION).
      type: str
    digests:
      description: The extended digest per bank (lowercase hex).
      type: dict
    description:
      description: What was hashed, in words.
      type: str
engines:
  description: The engines that ran (and agreed), V(python) and/or V(nitro-tpm-pcr-compute).
  returned: always
  type: list
  elements: str
  sample: [python, nitro-tpm-pcr-compute]
images:
  description:
    - Per image, in load order. C(path) and C(sha256) of the file always. With the Python engine also
      C(architecture), C(signed), C(authenticode) (digest per bank) and C(uki).
    - C(uki) is null for an image without a C(.linux) section, else a dict with C(sections), C(stub_version),
      C(stub_major), C(stub_version_source), C(architecture), C(kernel_architecture), C(kernel_size),
      C(kernel_authenticode), C(cmdline), C(os_release) and C(uname).
  returned: always
  type: list
  elements: dict
secure_boot:
  description: Whether the measurements assume Secure Boot (O(pk) given).
  returned: always
  type: bool
boot_mode:
  description:
    - How an instance of the image boots for these measurements, V(secure_boot) when O(pk) is given (Secure Boot
      is enforced exactly when a PK is enrolled), else V(standard).
    - O(kek) or O(db) without O(pk) measure into PCR7 but enforce nothing, so the mode stays V(standard) (with a
      warning); a key policy binding such a PCR7 alone would accept any image booted with those variables.
    - Record it as the manifest's C(measurements.boot_mode) and give it to
      P(attestable.ami.kms_attestation_policy#module), which never infers the boot mode from PCR values.
  returned: always
  type: str
  choices: [standard, secure_boot]
  sample: standard
tool:
  description: Path and rpm version (null when unknown) of the nitro-tpm-pcr-compute that ran.
  returned: when nitro-tpm-pcr-compute ran
  type: dict
dest:
  description: The file written (or that would be written in check mode).
  returned: when O(dest) is given
  type: str
"""

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file, measurements as meas
from ansible_collections.attestable.ami.plugins.module_utils._pcr import aws_tool as nitro_tpm_tool, engine as pcr_engine
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import PEFILE_IMPORT_ERROR

TOOL = nitro_tpm_tool.TOOL_NAME


def _sha256_of(path):
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (IOError, OSError) as exc:
        raise pcr_engine.PcrError("image %s: cannot read it: %s" % (path, exc.strerror or exc))
    return digest.hexdigest()


def _python_engine(module, inputs):
    engine = module.params["engine"]
    if PEFILE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("pefile", reason="for engine=%s" % engine),
                         exception=PEFILE_IMPORT_ERROR)
    try:
        return pcr_engine.compute(banks=module.params["banks"], **inputs)
    except pcr_engine.PcrError as exc:
        module.fail_json(msg=str(exc))


def _tool_wanted(module):
    engine = module.params["engine"]
    if engine == TOOL:
        return True
    if engine != "auto":
        return False
    try:
        return nitro_tpm_tool.find(module.params["tool_path"]) is not None
    except nitro_tpm_tool.ToolError as exc:  # a tool_path that is not an executable
        module.fail_json(msg=str(exc))


def _tool_engine(module, inputs):
    for path in inputs["images"]:
        if not os.path.isfile(path):
            module.fail_json(msg="image %s: no such file" % path)
    try:
        return nitro_tpm_tool.run(tool_path=module.params["tool_path"], **inputs)
    except nitro_tpm_tool.ToolError as exc:
        module.fail_json(msg=str(exc))


def _fail_on_disagreement(module, python, tool):
    if tool["measurements"] == python["measurements"]:
        return
    differing = [k for k in meas.REFERENCE_PCRS if tool["measurements"][k] != python["measurements"][k]]
    module.fail_json(
        msg="the engines disagree on %s: python computed %s, nitro-tpm-pcr-compute printed %s. Do not use either "
            "value in a key policy until this is understood; the events show what the python engine extended."
            % (", ".join(differing), json.dumps(python["measurements"]), json.dumps(tool["measurements"])),
        python=python["measurements"], nitro_tpm_pcr_compute=tool["measurements"], differing=differing,
        events=python["events"], images=python["images"])


def _compute(module, inputs):
    """The result fields (without changed/dest) for the engine(s) asked for."""
    result = {"engines": [], "events": [], "secure_boot": inputs["pk"] is not None}
    python = None
    if module.params["engine"] in ("auto", "python"):
        python = _python_engine(module, inputs)
        result.update(measurements=python["measurements"], banks=python["banks"], events=python["events"],
                      images=python["images"])
        result["engines"].append("python")
    elif module.params["banks"] != ["sha384"]:
        module.fail_json(msg="banks %s: nitro-tpm-pcr-compute computes SHA-384 only; use engine=python or auto"
                         % ", ".join(module.params["banks"]))

    if _tool_wanted(module):
        tool = _tool_engine(module, inputs)
        result["engines"].append(TOOL)
        result["tool"] = {"path": tool["tool"], "version": tool["version"]}
        if python is not None:
            _fail_on_disagreement(module, python, tool)
        else:
            result["measurements"] = tool["measurements"]
            try:
                result["images"] = [{"path": p, "sha256": _sha256_of(p)} for p in inputs["images"]]
            except pcr_engine.PcrError as exc:
                module.fail_json(msg=str(exc))
    return result


def _dest_text(measurements):
    return json.dumps({"Measurements": measurements}, indent=2) + "\n"


def _read_dest(path):
    """(text, parsed JSON or None) of an existing dest file; (None, None) when it does not exist.

    A directory, FIFO, symlink or other non-regular dest is refused (atomic_file.UnsafeFileError, an OSError).
    """
    text = atomic_file.read_text(path)
    if text is None:
        return None, None
    try:
        return text, json.loads(text)
    except ValueError:
        return text, None


def _handle_dest(module, result):
    path = module.params["dest"]
    try:
        before_text, before = _read_dest(path)
    except (IOError, OSError) as exc:
        module.fail_json(msg="dest %s" % exc if path in str(exc) else "dest %s: cannot read it: %s" % (path, exc),
                         **result)
    after_text = _dest_text(result["measurements"])
    changed = before != {"Measurements": result["measurements"]}
    result.update(changed=changed, dest=path)
    if module._diff:
        result["diff"] = dict(before=before_text or "", after=after_text, before_header=path, after_header=path)
    if changed and not module.check_mode:
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            module.fail_json(msg="dest %s: its directory does not exist" % path, **result)
        try:
            atomic_file.write_text(path, after_text)
        except (IOError, OSError) as exc:
            module.fail_json(msg="dest %s" % exc if path in str(exc) else "dest %s: cannot write it: %s" % (path, exc),
                             **result)
    result["changed"] = atomic_file.set_attributes(module, path, changed)  # owner, group, mode, ... (check mode: none)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            images=dict(type="list", elements="path", required=True),
            pk=dict(type="path"),
            kek=dict(type="path"),
            db=dict(type="path"),
            dbx=dict(type="path"),
            engine=dict(type="str", default="auto", choices=["auto", "python", TOOL]),
            tool_path=dict(type="path"),
            banks=dict(type="list", elements="str", default=["sha384"], choices=["sha384", "sha256"]),
            dest=dict(type="path"),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if not module.params["images"]:
        module.fail_json(msg="images: give at least one EFI image path (in load order)")
    inputs = dict((key, module.params[key]) for key in ("images", "pk", "kek", "db", "dbx"))
    result = _compute(module, inputs)
    result["boot_mode"] = pcr_engine.boot_mode(inputs["pk"], inputs["kek"], inputs["db"])
    if result["boot_mode"] == meas.STANDARD and (inputs["kek"] or inputs["db"]):
        module.warn("kek/db given without pk: Secure Boot is not enforced without a PK, so boot_mode is standard; "
                    "bind PCR4 and PCR12 (a PCR7 of these variables alone would accept any image)")
    result["changed"] = False
    if module.params["dest"]:
        _handle_dest(module, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
