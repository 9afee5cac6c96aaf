# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""measured_boot on real OVMF + swtpm: predictions by pcr_compute equal what the firmware measured.

Four boots in all (about 10-30 s each under TCG): the reproducible UKI from a temporary ESP (through the
user-facing playbooks/measure_uki.yml), the same UKI
from a GPT disk with a wrong `expected`, a signed UKI under enforced Secure Boot, and the unsigned UKI under
Secure Boot (rejected by the firmware, so the task times out: checks enforcement and cleanup on timeout).
"""
import hashlib
import os
import subprocess
import time

import pytest

from measured_boot_helpers import MEASURE_UKI_PLAYBOOK, STANDARD_BOOT_PCR7, processes_mentioning

pytestmark = pytest.mark.slow

ZEROS = "0" * 96

PREDICT_AND_BOOT = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Predict
      attestable.ami.pcr_compute:
        images: ["{{ image }}"]
        pk: "{{ esl | default(omit) }}"
        kek: "{{ esl | default(omit) }}"
        db: "{{ esl | default(omit) }}"
        dbx: "{{ dbx | default(omit) }}"
        banks: [sha384, sha256]
      register: prediction

    - name: Boot
      attestable.ami.measured_boot:
        uki: "{{ uki | default(omit) }}"
        disk: "{{ disk | default(omit) }}"
        pk: "{{ esl | default(omit) }}"
        kek: "{{ esl | default(omit) }}"
        db: "{{ esl | default(omit) }}"
        dbx: "{{ dbx | default(omit) }}"
        timeout: "{{ boot_timeout | default(300) }}"
        expected: "{{ prediction.measurements | combine(expected_override | default({})) }}"
        banks: [sha384, sha256]
"""


def _sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _events(result, pcr, bank="sha384"):
    return [e["digests"][bank] for e in result["events"] if e["pcr"] == pcr]


def _predicted_events(prediction, pcr, bank="sha384"):
    return [e["digests"][bank] for e in prediction["events"] if e["pcr"] == pcr]


def _assert_proven(prediction, boot):
    assert not boot.get("failed"), boot.get("msg")
    assert boot["stop_reason"] == "exit_boot_services"
    assert boot["differing"] == []
    for pcr in ("PCR4", "PCR7", "PCR12"):
        assert boot["measured"][pcr] == prediction["measurements"][pcr], pcr
        assert boot["banks"]["sha256"][pcr] == prediction["banks"]["sha256"][pcr], pcr
    # Not only the final values: the very same extends, in the same order.
    for pcr in (4, 7):
        assert _events(boot, pcr) == _predicted_events(prediction, pcr)
        assert _events(boot, pcr, "sha256") == _predicted_events(prediction, pcr, "sha256")
    assert _events(boot, 12) == []


def _make_gpt_disk(path, efi):
    """A raw GPT disk whose EFI System partition holds efi as EFI/BOOT/BOOTX64.EFI (sgdisk + mtools, no mount)."""
    esp = path + ".esp"
    subprocess.run(["truncate", "-s", "64M", esp], check=True)
    subprocess.run(["mkfs.vfat", "-F", "32", esp], check=True, capture_output=True)
    subprocess.run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], check=True)
    subprocess.run(["mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI"], check=True)
    subprocess.run(["truncate", "-s", "%d" % (66 * 1024 * 1024), path], check=True)
    subprocess.run(["sgdisk", "--new=1:2048:+64M", "--typecode=1:ef00", path], check=True, capture_output=True)
    subprocess.run(["dd", "if=%s" % esp, "of=%s" % path, "bs=1M", "seek=1", "conv=notrunc"], check=True,
                   capture_output=True)
    os.unlink(esp)
    return path


def test_measure_uki_playbook_proves_the_prediction_and_leaves_nothing_behind(run_playbook, uki, short_tmpdir):
    """The user-facing playbook (pcr_compute, then measured_boot with expected = the prediction) on our UKI."""
    started = time.time()
    run = run_playbook(MEASURE_UKI_PLAYBOOK, extra_vars={"measure_uki_path": uki}, env={"TMPDIR": short_tmpdir})
    print("measure_uki.yml: %.1f s" % (time.time() - started))
    assert run.rc == 0, run.stdout[-3000:]
    prediction = run.task("Predict the reference measurements")
    boot = run.task("Boot the UKI on OVMF with a TPM and compare with the prediction")
    _assert_proven(prediction, boot)
    assert boot["secure_boot"] is False
    assert boot["measured"]["PCR7"] == STANDARD_BOOT_PCR7
    assert boot["measured"]["PCR12"] == ZEROS
    # standard boot with stub 252: action, separator, the UKI, its embedded kernel
    assert len(_events(boot, 4)) == 4
    shown = run.task("Show the predicted and the measured values")["msg"]
    assert shown["measured"] == shown["predicted"] == prediction["measurements"]
    assert os.listdir(short_tmpdir) == []
    assert processes_mentioning(short_tmpdir) == []


def test_disk_boot_with_a_wrong_expected_fails_and_shows_both_sequences(run_playbook, uki, tmp_path):
    disk = _make_gpt_disk(str(tmp_path / "disk.raw"), uki)
    before = _sha256(disk)
    wrong = "ab" * 48
    run = run_playbook(PREDICT_AND_BOOT, extra_vars={"image": uki, "disk": disk,
                                                     "expected_override": {"PCR4": wrong}})
    assert run.rc != 0
    prediction, boot = run.task("Predict"), run.task("Boot")
    assert boot["failed"]
    assert "PCR4: expected %s, measured %s" % (wrong, prediction["measurements"]["PCR4"]) in boot["msg"]
    # The disk booted and was measured like the UKI it holds; only the (wrong) expectation differs.
    assert boot["measured"] == prediction["measurements"]
    assert boot["differing"] == ["PCR4"]
    comparison = boot["comparison"]
    assert list(comparison) == ["PCR4"]
    assert comparison["PCR4"]["expected"] == wrong
    assert comparison["PCR4"]["predicted"] == prediction["measurements"]["PCR4"]
    rows = comparison["PCR4"]["events"]
    assert [r["measured"] for r in rows] == _predicted_events(prediction, 4)
    assert [r["predicted"] for r in rows] == _predicted_events(prediction, 4)
    assert all(r["match"] for r in rows)
    assert rows[2]["predicted_type"] == "EV_EFI_BOOT_SERVICES_APPLICATION"
    assert _sha256(disk) == before  # attached with snapshot=on


def test_signed_uki_under_secure_boot_proves_pcr7(run_playbook, secure_boot, tmp_path):
    # dbx revokes another EFI binary (systemd-boot) by its hash: enrolled and measured, not matching our UKI
    dbx = str(tmp_path / "dbx.esl")
    subprocess.run(["hash-to-efi-sig-list", "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", dbx], check=True,
                   capture_output=True)
    run = run_playbook(PREDICT_AND_BOOT, extra_vars={"image": secure_boot["uki"], "uki": secure_boot["uki"],
                                                     "esl": secure_boot["esl"], "dbx": dbx})
    assert run.rc == 0, run.stdout[-3000:]
    prediction, boot = run.task("Predict"), run.task("Boot")
    _assert_proven(prediction, boot)
    assert boot["secure_boot"] is True
    assert boot["measured"]["PCR7"] != STANDARD_BOOT_PCR7
    # SecureBoot, PK, KEK, db, dbx, separator, then the db certificate that authorised the UKI
    assert len(_events(boot, 7)) == 7
    # stub 252 under Secure Boot: no separate kernel measurement
    assert len(_events(boot, 4)) == 3


BOOT_UNSIGNED_UNDER_SECURE_BOOT = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Predict without Secure Boot
      attestable.ami.pcr_compute:
        images: ["{{ uki }}"]
      register: prediction

    - name: Boot
      attestable.ami.measured_boot:
        uki: "{{ uki }}"
        pk: "{{ esl }}"
        kek: "{{ esl }}"
        db: "{{ esl }}"
        timeout: 30
"""


def test_unsigned_uki_is_refused_under_secure_boot_and_the_timeout_cleans_up(run_playbook, uki, secure_boot,
                                                                             short_tmpdir):
    started = time.time()
    run = run_playbook(BOOT_UNSIGNED_UNDER_SECURE_BOOT, extra_vars={"uki": uki, "esl": secure_boot["esl"]},
                       env={"TMPDIR": short_tmpdir})
    elapsed = time.time() - started
    boot = run.task("Boot")
    assert boot["failed"]
    assert boot["stop_reason"] == "timeout"
    assert "ExitBootServices within 30 s" in boot["msg"]
    # The firmware refused to run the unsigned UKI: its Authenticode digest never reached PCR4.
    uki_digest = _predicted_events(run.task("Predict without Secure Boot"), 4)[2]
    assert len(_events(boot, 7)) >= 6  # the partial replay is real: Secure Boot variables and separator
    assert uki_digest not in _events(boot, 4)
    assert elapsed < 120
    assert os.listdir(short_tmpdir) == []
    assert processes_mentioning(short_tmpdir) == []
