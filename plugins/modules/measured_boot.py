#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: measured_boot
short_description: Boot an image on real UEFI firmware with a TPM and report what the firmware measured
version_added: 0.1.0
description:
  - Boots O(uki) (from a temporary EFI System Partition, as C(EFI/BOOT/BOOTX64.EFI)) or O(disk) (a raw GPT disk
    image, opened read-only) under qemu with OVMF firmware and a swtpm TPM 2.0 (SHA-256 and SHA-384 banks).
  - The PCR values are read on the host, by replaying the TPM2_PCR_Extend commands swtpm logged, so any image
    works without help from the guest.
  - With O(until=firmware) (the default) the guest is stopped as soon as an OS loader calls ExitBootServices (the
    firmware's C(Exit Boot Services Invocation) event in PCR5). From then on the firmware measures nothing more
    into PCR4 or PCR7, and the systemd stub has done its PCR12 measurements. Without that event within
    O(timeout) the task fails.
  - With O(until=userspace) the OS boots on until its serial console prints a line matching O(console_expect)
    (proof that it reached userspace, for example on a dm-verity protected root), and the task fails when the
    console shows a dm-verity corruption or a kernel panic, the guest powers off first, or O(timeout) passes
    (RV(boot_failed) says which). The measurements are still those up to ExitBootServices; what the kernel or
    userspace extends later (IMA, systemd's PCR11 phases, anything into PCR12) is left out of RV(measured),
    RV(events) and the comparison with O(expected).
  - O(expect_boot_failure) turns a failure into the expected result (for tamper proofs); the task then succeeds only
    when the boot failed in exactly that way.
  - With O(expected) (the RV(attestable.ami.pcr_compute#module:measurements) of M(attestable.ami.pcr_compute)),
    any PCR that differs fails the task, and RV(comparison) shows the measured extends beside the events the
    PCR engine predicts for the booted image.
  - With O(pk) (and O(kek), O(db), O(dbx)) a copy of the variable store gets those keys enrolled byte for byte
    and Secure Boot enforced, so a signed UKI proves PCR7 too.
  - Every process and temporary file is removed when the task ends, also on failure and timeout.
  - A boot to ExitBootServices takes about 10 to 30 seconds of software emulation, to userspace about a minute.
author:
  - Attestable AMI maintainers (@attestable)
extends_documentation_fragment:
  - attestable.ami.attributes
options:
  uki:
    description:
      - EFI application (usually a Unified Kernel Image) to boot. The module puts it on a temporary ESP as
        the removable-media loader (C(EFI/BOOT/BOOTX64.EFI), C(BOOTAA64.EFI) on aarch64).
      - Exactly one of O(uki) and O(disk) is required.
    type: path
  disk:
    description:
      - Raw GPT disk image with an EFI System partition (for example KIWI's C(.raw) output). It is attached
        with C(snapshot=on), so the file is never written.
    type: path
  arch:
    description:
      - Guest architecture; V(arm64) and V(aarch64) are the same. V(aarch64) boots under C(qemu-system-aarch64) (machine C(virt)) with AAVMF and needs the
        Debian packages C(qemu-system-arm) and C(qemu-efi-aarch64).
      - M(attestable.ami.pcr_compute) cannot predict a UKI made with Debian's arm64 stub 252 (it has no
        C(.sdmagic) section to tell the stub version); such a boot still reports what the firmware measured.
    type: str
    choices: [x86_64, arm64, aarch64]
    default: x86_64
  firmware_code:
    description:
      - UEFI firmware code image (read-only pflash).
      - Default C(/usr/share/OVMF/OVMF_CODE_4M.fd) (x86_64) or C(/usr/share/AAVMF/AAVMF_CODE.fd) (aarch64).
    type: path
  firmware_vars:
    description:
      - UEFI variable store template. It is copied; the copy gets the O(pk)/O(kek)/O(db)/O(dbx) keys.
      - Default C(/usr/share/OVMF/OVMF_VARS_4M.fd) (x86_64) or C(/usr/share/AAVMF/AAVMF_VARS.fd) (aarch64).
    type: path
  pk:
    description:
      - File holding the PK variable's data (EFI_SIGNATURE_LIST bytes), enrolled verbatim.
      - Giving O(pk) enables and enforces Secure Boot, as O(attestable.ami.pcr_compute#module:pk) assumes.
    type: path
  kek:
    description: File holding the KEK variable's data (EFI_SIGNATURE_LIST bytes), enrolled verbatim.
    type: path
  db:
    description: File holding the db variable's data (EFI_SIGNATURE_LIST bytes), enrolled verbatim.
    type: path
  dbx:
    description: File holding the dbx variable's data (EFI_SIGNATURE_LIST bytes), enrolled verbatim.
    type: path
  timeout:
    description:
      - Seconds to wait for the boot to reach its stage (see O(until)) before failing with RV(boot_failed=timeout).
      - Default V(300) with O(until=firmware), V(900) with O(until=userspace) (an OS under software emulation on a
        busy machine).
    type: int
  until:
    description:
      - V(firmware) stops at ExitBootServices (about 10 to 30 seconds).
      - V(userspace) lets the OS boot until its serial console (C(ttyS0) on x86_64, C(ttyAMA0) on aarch64) prints a
        line matching O(console_expect); about a minute for a Debian image with systemd.
    type: str
    choices: [firmware, userspace]
    default: firmware
  console_expect:
    description:
      - Python regular expression searched for in the serial console's lines (terminal escapes removed) when
        O(until=userspace). Only allowed with O(until=userspace).
      - Default V(ATTESTABLE-USERSPACE-REACHED), the line the collection's images print when C(multi-user.target)
        is reached.
    type: str
  expect_boot_failure:
    description:
      - The boot is expected to fail this way (a tamper proof, for example a disk whose verity-protected root has a
        flipped byte must give V(verity)). The task succeeds only when RV(boot_failed) is exactly this value, and
        fails when the boot succeeded or failed otherwise. O(expected) is still compared when ExitBootServices
        was reached.
      - V(verity) and V(panic) need O(until=userspace).
    type: str
    choices: [verity, panic, timeout, exited]
  expected:
    description:
      - Reference measurements to prove, as M(attestable.ami.pcr_compute) returns them in
        RV(attestable.ami.pcr_compute#module:measurements) (C(HashAlgorithm) V(SHA384) and C(PCR4), C(PCR7),
        C(PCR12) as 96 hex characters; any C(PCR0) to C(PCR23) may be given).
      - Any PCR that differs from what was measured fails the task.
    type: dict
  banks:
    description: Hash banks reported in RV(banks) and in the digests of RV(events).
    type: list
    elements: str
    choices: [sha384, sha256]
    default: [sha384]
attributes:
  check_mode:
    support: full
    details: The module changes nothing on the host, so it boots and measures in check mode too.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Never reports a change.
seealso:
  - module: attestable.ami.pcr_compute
"""

EXAMPLES = r"""
- name: Predict the reference measurements of a UKI
  attestable.ami.pcr_compute:
    images: [build/image.efi]
  register: prediction

- name: Prove them on real UEFI firmware and a TPM
  attestable.ami.measured_boot:
    uki: build/image.efi
    expected: "{{ prediction.measurements }}"
  register: boot

- name: Boot the KIWI disk to userspace on its dm-verity protected root, proving the prediction on the way
  attestable.ami.measured_boot:
    disk: build/image.raw
    until: userspace
    expected: "{{ prediction.measurements }}"
  register: boot

- name: The same disk with one byte of the root partition flipped must not boot
  attestable.ami.measured_boot:
    disk: build/image.tampered.raw
    until: userspace
    expect_boot_failure: verity

- name: Boot a KIWI disk image under Secure Boot with our own keys
  attestable.ami.measured_boot:
    disk: build/image.raw
    pk: keys/PK.esl
    kek: keys/KEK.esl
    db: keys/db.esl
    banks: [sha384, sha256]
    timeout: 600
"""

RETURN = r"""
measured:
  description: The SHA-384 values of PCR4, PCR7, PCR12 (and any other PCR named in O(expected)) at the moment the
    OS loader called ExitBootServices, in the format of M(attestable.ami.pcr_compute)'s measurements.
  returned: always (partial when the boot did not reach ExitBootServices)
  type: dict
  sample:
    HashAlgorithm: SHA384
    PCR4: 409b0845e19393e8fc09178545027f8a7e7d209ac15e8572ade37acb1ffae13fbc8bf6b61f4779aeea3b4f8ce08d2b4f
    PCR7: 98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578ae72d04ecef661f272d59058b77af35
    PCR12: "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
banks:
  description: The same PCRs per bank asked for in O(banks) (lowercase hex).
  returned: when the boot ran
  type: dict
  sample: {"sha256": {"PCR4": "c5ffec0f...", "PCR7": "65caf8dd...", "PCR12": "0000..."}}
events:
  description: Every PCR extend the TPM received, in order, up to and including the ExitBootServices event.
  returned: when the boot ran
  type: list
  elements: dict
  contains:
    order:
      description: Position in the sequence (0 = first extend after the TPM started).
      type: int
    pcr:
      description: The PCR index.
      type: int
    command:
      description: V(TPM2_PCR_Extend) or V(TPM2_PCR_Event).
      type: str
    digests:
      description: The extended digest per bank (lowercase hex).
      type: dict
differing:
  description: The PCRs (for example V(PCR4)) whose measured value differs from O(expected); empty when all match.
  returned: when O(expected) is given and the boot ran
  type: list
  elements: str
comparison:
  description:
    - Per differing PCR, C(expected), C(measured), C(predicted) (the engine's value for the booted image) and
      C(events), a list of rows pairing the n-th measured extend with the n-th predicted event
      (C(position), C(measured), C(predicted), C(predicted_type), C(predicted_description), C(match)).
      C(prediction_unavailable) says why when the engine cannot predict the image.
  returned: when a PCR differs from O(expected)
  type: dict
secure_boot:
  description: Whether Secure Boot was enabled (O(pk) given).
  returned: when the boot ran
  type: bool
stop_reason:
  description:
    - What ended the boot. V(exit_boot_services) (O(until=firmware)) or V(console_expect) (O(until=userspace)) when it
      reached its stage; V(boot_failed) (a dm-verity corruption or kernel panic on the console), V(timeout) or
      V(guest_exited) otherwise.
  returned: when the boot ran
  type: str
until:
  description: The stage the boot was run to (O(until)).
  returned: when the boot ran
  type: str
reached_userspace:
  description: Whether the serial console printed a line matching O(console_expect) (always V(false) with O(until=firmware)).
  returned: when the boot ran
  type: bool
boot_failed:
  description:
    - How the boot failed, or V(null) when it reached its stage. V(verity) when the console shows a dm-verity
      corruption (the kernel's C(dm-verity device corrupted) panic, or a C(block N is corrupted) message of
      device-mapper's verity target); V(panic) for
      any other kernel panic; V(timeout) when O(timeout) passed; V(exited) when the guest powered off or reset
      before reaching its stage.
  returned: when the boot ran
  type: str
  sample: verity
boot_seconds:
  description: Seconds from starting qemu until the boot reached its stage or failed.
  returned: when the boot ran
  type: float
  sample: 46.2
console_tail:
  description: The last (up to 40) non-empty lines of the guest's serial console, terminal escapes removed.
  returned: when the boot ran
  type: list
  elements: str
duration:
  description: Seconds from starting qemu to stopping it.
  returned: when the boot ran
  type: float
console:
  description: The last lines of the guest's serial console (for debugging a boot that failed).
  returned: when the boot ran
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.attestable.ami.plugins.module_utils._boot.measure import MeasuredBootError, measure
from ansible_collections.attestable.ami.plugins.module_utils._common import architectures


def main():
    module = AnsibleModule(
        argument_spec=dict(
            uki=dict(type="path"),
            disk=dict(type="path"),
            arch=dict(type="str", default="x86_64", choices=list(architectures.ACCEPTED)),
            firmware_code=dict(type="path"),
            firmware_vars=dict(type="path"),
            pk=dict(type="path"),
            kek=dict(type="path"),
            db=dict(type="path"),
            dbx=dict(type="path"),
            timeout=dict(type="int"),
            until=dict(type="str", default="firmware", choices=["firmware", "userspace"]),
            console_expect=dict(type="str"),
            expect_boot_failure=dict(type="str", choices=["verity", "panic", "timeout", "exited"]),
            expected=dict(type="dict"),
            banks=dict(type="list", elements="str", default=["sha384"], choices=["sha384", "sha256"]),
        ),
        mutually_exclusive=[("uki", "disk")],
        required_one_of=[("uki", "disk")],
        supports_check_mode=True,
    )
    try:
        result = measure(dict(module.params))
    except MeasuredBootError as exc:
        module.fail_json(msg=str(exc), changed=False, **exc.result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
