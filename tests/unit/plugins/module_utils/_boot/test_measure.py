# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""boot_measurements: input checks (before any boot) and the side-by-side comparison."""
import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import qemu as qemu_boot
from ansible_collections.attestable.ami.plugins.module_utils._boot.measure import (
    MeasuredBootError,
    check_boot_options,
    check_expected,
    check_inputs,
    check_outcome,
    side_by_side,
)

GOOD = {"HashAlgorithm": "SHA384", "PCR4": "AB" * 48, "PCR7": "cd" * 48, "PCR12": "0" * 96}


def test_expected_is_normalised_to_lowercase_by_pcr_number():
    assert check_expected(GOOD) == {4: "ab" * 48, 7: "cd" * 48, 12: "0" * 96}
    assert check_expected({"PCR23": "f" * 96}) == {23: "f" * 96}


@pytest.mark.parametrize("expected, message", [
    ({}, "give a measurements dict"),
    ("PCR4", "give a measurements dict"),
    ({"HashAlgorithm": "SHA1", "PCR4": "ab" * 48}, "HashAlgorithm 'SHA1' is not supported"),
    ({"PCR24": "ab" * 48}, "key 'PCR24' is not a PCR"),
    ({"pcr4": "ab" * 48}, "key 'pcr4' is not a PCR"),
    ({"PCR4": "ab" * 32}, "PCR4 must be 96 hexadecimal characters"),
    ({"PCR4": "zz" * 48}, "PCR4 must be 96 hexadecimal characters"),
    ({"PCR4": 12}, "PCR4 must be 96 hexadecimal characters"),
    ({"HashAlgorithm": "SHA384"}, "no PCR given"),
])
def test_bad_expected_is_refused_naming_the_problem(expected, message):
    with pytest.raises(MeasuredBootError, match=message):
        check_expected(expected)


@pytest.mark.parametrize("params, message", [
    ({}, "give exactly one of uki"),
    ({"uki": "/a", "disk": "/b"}, "give exactly one of uki"),
    ({"uki": "/nonexistent.efi"}, "uki: /nonexistent.efi is not a file"),
    ({"disk": "/nonexistent.raw"}, "disk: /nonexistent.raw is not a file"),
    ({"uki": __file__, "arch": "riscv64"}, "arch: 'riscv64' is not supported"),
    ({"uki": __file__}, "is not a PE/EFI image"),
])
def test_bad_inputs_are_refused_before_booting(params, message):
    with pytest.raises(MeasuredBootError, match=message):
        check_inputs(dict(params))


def test_a_uki_that_is_no_pe_image_is_refused(tmp_path):
    text = tmp_path / "uki.efi"
    text.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(MeasuredBootError, match="uki: .*uki.efi is not a PE/EFI image"):
        check_inputs({"uki": str(text)})


def test_bad_esl_is_refused(tmp_path):
    code = tmp_path / "code.fd"
    code.write_bytes(b"\0")
    esl = tmp_path / "pk.esl"
    esl.write_bytes(b"\x01" * 10)
    uki = tmp_path / "uki.efi"
    uki.write_bytes(b"MZ" + b"\0" * 62)
    with pytest.raises(MeasuredBootError, match="pk: .*pk.esl is not a valid EFI signature list"):
        check_inputs({"uki": str(uki), "firmware_code": str(code), "firmware_vars": str(code), "pk": str(esl)})


def test_side_by_side_pairs_the_nth_events_of_a_pcr():
    measured = [{"pcr": 4, "digests": {"sha384": "a"}}, {"pcr": 7, "digests": {"sha384": "z"}},
                {"pcr": 4, "digests": {"sha384": "b"}}, {"pcr": 4, "digests": {"sha384": "c"}}]
    predicted = [{"pcr": 4, "type": "EV_EFI_ACTION", "description": "action", "digests": {"sha384": "a"}},
                 {"pcr": 4, "type": "EV_EFI_BOOT_SERVICES_APPLICATION", "description": "uki",
                  "digests": {"sha384": "x"}}]
    rows = side_by_side(4, measured, predicted)
    assert [(r["measured"], r["predicted"], r["match"]) for r in rows] == [
        ("a", "a", True), ("b", "x", False), ("c", None, False)]
    assert rows[1]["predicted_type"] == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert rows[2]["predicted_description"] is None


def test_aarch64_without_its_firmware_names_the_packages_to_install(tmp_path, monkeypatch):
    # stands for a machine without qemu-efi-aarch64: the default AAVMF path does not exist
    missing = str(tmp_path / "AAVMF_CODE.fd")
    monkeypatch.setitem(qemu_boot.ARCHITECTURES["aarch64"], "code", missing)
    uki = tmp_path / "uki.efi"
    uki.write_bytes(b"MZ" + b"\0" * 62)
    with pytest.raises(MeasuredBootError, match="firmware_code: .*AAVMF_CODE.fd is not a file .*qemu-efi-aarch64"):
        check_inputs({"uki": str(uki), "arch": "aarch64"})


def test_a_missing_firmware_file_is_named(tmp_path):
    uki = tmp_path / "uki.efi"
    uki.write_bytes(b"MZ" + b"\0" * 62)
    with pytest.raises(MeasuredBootError, match="firmware_code: /nonexistent/CODE.fd is not a file"):
        check_inputs({"uki": str(uki), "firmware_code": "/nonexistent/CODE.fd"})


@pytest.mark.parametrize("params, message", [
    ({"until": "kernel"}, "until: 'kernel' is not supported"),
    ({"console_expect": "x"}, "console_expect: only used with until: userspace"),
    ({"until": "userspace", "console_expect": "  "}, "console_expect: give a regular expression"),
    ({"until": "userspace", "console_expect": "(unclosed"}, "console_expect: '\\(unclosed' is not a valid regular"),
    ({"until": "userspace", "expect_boot_failure": "oops"}, "expect_boot_failure: 'oops' is not a boot failure"),
    ({"expect_boot_failure": "verity"}, "expect_boot_failure: verity needs until: userspace"),
    ({"until": "firmware", "expect_boot_failure": "panic"}, "expect_boot_failure: panic needs until: userspace"),
])
def test_boot_options_that_do_not_fit_are_refused(params, message):
    with pytest.raises(MeasuredBootError, match=message):
        check_boot_options(params)


def test_boot_options_that_fit_are_accepted():
    assert check_boot_options({}) == "firmware"
    assert check_boot_options({"expect_boot_failure": "timeout"}) == "firmware"
    assert check_boot_options({"until": "userspace", "console_expect": r"^login:", "expect_boot_failure": "verity"}) \
        == "userspace"


def _outcome(boot_failed, until="userspace", ebs=True, reached=False, tail=("[ 1.0] booting",)):
    return qemu_boot.BootOutcome(None, "x", 12.0, "console text", 0, until=until, boot_seconds=11.5,
                                 exit_boot_services=ebs, reached_userspace=reached, boot_failed=boot_failed,
                                 console_tail=list(tail))


VERITY_TAIL = ("[ 4.1] device-mapper: verity: 254:0: data block 41 is corrupted",
               "[ 4.1] Kernel panic - not syncing: dm-verity device corrupted")


@pytest.mark.parametrize("outcome, params, message", [
    (_outcome("verity", tail=VERITY_TAIL), {"until": "userspace"},
     "dm-verity found the verity-protected root corrupted \\(.*dm-verity device corrupted\\) after 11.5 s"),
    (_outcome("panic", tail=("[ 2.0] Kernel panic - not syncing: Attempted to kill init!",)), {"until": "userspace"},
     "the kernel panicked after 11.5 s: .*Attempted to kill init!"),
    (_outcome("timeout"), {"until": "userspace", "timeout": 60},
     "did not print a line matching 'ATTESTABLE-USERSPACE-REACHED' .* within 60 s"),
    (_outcome("timeout"), {"until": "userspace", "console_expect": "login:"}, "matching 'login:' .* within 900 s"),
    (_outcome("exited"), {"until": "userspace"}, "the guest stopped .* after 11.5 s without printing a line"),
    (_outcome("timeout", until="firmware", ebs=False), {}, "no OS loader called ExitBootServices within 300 s"),
    (_outcome("exited", until="firmware", ebs=False), {}, "before any OS loader called ExitBootServices"),
])
def test_an_unexpected_boot_failure_fails_with_what_the_console_showed(outcome, params, message):
    with pytest.raises(MeasuredBootError, match=message):
        check_outcome(outcome, params, {"boot_failed": outcome.boot_failed})


def test_an_expected_boot_failure_passes_only_when_it_is_exactly_that_failure():
    check_outcome(_outcome("verity", tail=VERITY_TAIL), {"expect_boot_failure": "verity"}, {})
    with pytest.raises(MeasuredBootError, match="expected to fail with verity, but it failed with panic"):
        check_outcome(_outcome("panic"), {"expect_boot_failure": "verity"}, {})
    with pytest.raises(MeasuredBootError, match="expected to fail with verity, but it reached userspace after 11.5 s"):
        check_outcome(_outcome(None, reached=True), {"expect_boot_failure": "verity"}, {})
    with pytest.raises(MeasuredBootError, match="expected to fail with timeout, but it reached ExitBootServices"):
        check_outcome(_outcome(None, until="firmware"), {"expect_boot_failure": "timeout"}, {})
    check_outcome(_outcome(None, reached=True), {}, {})


def test_a_console_match_before_exit_boot_services_does_not_count():
    with pytest.raises(MeasuredBootError, match="console matched 'BdsDxe', but no ExitBootServices was measured"):
        check_outcome(_outcome(None, ebs=False, reached=True), {"console_expect": "BdsDxe"}, {})
