# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""measured_boot until: userspace on real OVMF + swtpm, with UKIs whose busybox /init behaves in known ways.

The UKIs are scripts/build-uki.sh's (Debian cloud kernel, systemd stub 252, cmdline "console=ttyS0 panic=-1
quiet") with the initrd replaced: an init that extends PCR12 from userspace and then prints the marker, one that
exits (the kernel panics "Attempted to kill init!"), one that hangs. Each boot takes about 20-60 s under TCG.
"""
import os
import time

import pytest

from measured_boot_helpers import INIT_PROLOGUE, pcr_extend_command, processes_mentioning, uki_with_init

pytestmark = pytest.mark.slow

ZEROS = "0" * 96
MARKER = "ATTESTABLE-USERSPACE-REACHED"

EXTEND_THEN_MARKER = INIT_PROLOGUE + """
cat /extend-pcr12.bin > /dev/tpm0
echo "guest-pcr12 $(cat /sys/class/tpm/tpm0/pcr-sha384/12)"
echo ATTESTABLE-USERSPACE-REACHED
while :; do sleep 60; done
"""
EXIT_INIT = INIT_PROLOGUE + """
echo "guest-init: giving up"
exit 1
"""
HANG_INIT = INIT_PROLOGUE + """
echo "guest-init: waiting forever"
while :; do sleep 60; done
"""

BOOT = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Predict
      attestable.ami.pcr_compute:
        images: ["{{ uki }}"]
      register: prediction

    - name: Boot
      attestable.ami.measured_boot:
        uki: "{{ uki }}"
        until: userspace
        console_expect: "{{ console_expect | default(omit) }}"
        expect_boot_failure: "{{ expect_boot_failure | default(omit) }}"
        timeout: "{{ boot_timeout | default(omit) }}"
        expected: "{{ prediction.measurements }}"
      ignore_errors: true
"""


@pytest.fixture(scope="module")
def init_ukis(uki, parts_dir):
    extend = pcr_extend_command(12, b"injected after ExitBootServices")
    return {
        "extend": uki_with_init(uki, EXTEND_THEN_MARKER, os.path.join(parts_dir, "uki.extend.efi"),
                                {"extend-pcr12.bin": extend}),
        "exit": uki_with_init(uki, EXIT_INIT, os.path.join(parts_dir, "uki.exit.efi")),
        "hang": uki_with_init(uki, HANG_INIT, os.path.join(parts_dir, "uki.hang.efi")),
    }


def _clean(tmpdir):
    assert os.listdir(tmpdir) == []
    assert processes_mentioning(tmpdir) == []


def test_userspace_marker_is_reached_and_a_later_pcr12_extend_does_not_count(run_playbook, init_ukis, short_tmpdir):
    started = time.time()
    run = run_playbook(BOOT, extra_vars={"uki": init_ukis["extend"]}, env={"TMPDIR": short_tmpdir})
    boot = run.task("Boot")
    print("boot to userspace: %s s (module), %.1f s (playbook)" % (boot.get("boot_seconds"), time.time() - started))
    assert not boot.get("failed"), boot.get("msg")
    assert boot["reached_userspace"] is True
    assert boot["boot_failed"] is None
    assert boot["stop_reason"] == "console_expect"
    assert boot["until"] == "userspace"
    assert MARKER in boot["console_tail"]
    assert all("\x1b" not in line for line in boot["console_tail"])
    # The guest really extended PCR12 from userspace (its own read shows a non-zero value) ...
    guest = [line.split()[1] for line in boot["console_tail"] if line.startswith("guest-pcr12 ")]
    assert len(guest) == 1 and guest[0] != ZEROS, boot["console_tail"]
    # ... yet the measurements stop at ExitBootServices: PCR12 as predicted (zeros), no PCR12 event.
    prediction = run.task("Predict")
    assert boot["measured"] == prediction["measurements"]
    assert boot["measured"]["PCR12"] == ZEROS
    assert boot["differing"] == []
    assert [e for e in boot["events"] if e["pcr"] == 12] == []
    assert boot["events"][-1]["pcr"] == 5  # the last event is ExitBootServices
    assert 0 < boot["boot_seconds"] <= boot["duration"]
    _clean(short_tmpdir)


PANIC_TWICE = BOOT.replace("""      ignore_errors: true
""", """      ignore_errors: true

    - name: Boot expecting the panic
      attestable.ami.measured_boot:
        uki: "{{ uki }}"
        until: userspace
        expect_boot_failure: panic
        expected: "{{ prediction.measurements }}"
""")


def test_a_kernel_panic_fails_the_boot_unless_it_is_the_expected_failure(run_playbook, init_ukis, short_tmpdir):
    run = run_playbook(PANIC_TWICE, extra_vars={"uki": init_ukis["exit"]}, env={"TMPDIR": short_tmpdir})
    assert run.rc == 0, run.stdout[-3000:]
    boot = run.task("Boot")
    assert boot["failed"]
    assert boot["boot_failed"] == "panic"
    assert boot["reached_userspace"] is False
    assert "the kernel panicked" in boot["msg"] and "Attempted to kill init" in boot["msg"]
    assert "guest-init: giving up" in boot["console_tail"]
    expected = run.task("Boot expecting the panic")
    assert not expected.get("failed"), expected.get("msg")
    assert expected["boot_failed"] == "panic"
    # the firmware's measurements were still proven on the way
    assert expected["differing"] == []
    assert expected["measured"] == run.task("Predict")["measurements"]
    _clean(short_tmpdir)


def test_an_init_that_never_prints_the_marker_times_out_and_is_stopped(run_playbook, init_ukis, short_tmpdir):
    started = time.time()
    run = run_playbook(BOOT, extra_vars={"uki": init_ukis["hang"], "boot_timeout": 90},
                       env={"TMPDIR": short_tmpdir})
    elapsed = time.time() - started
    boot = run.task("Boot")
    assert boot["failed"]
    assert boot["boot_failed"] == "timeout"
    assert boot["stop_reason"] == "timeout"
    assert "did not print a line matching 'ATTESTABLE-USERSPACE-REACHED'" in boot["msg"]
    assert "within 90 s" in boot["msg"]
    assert "guest-init: waiting forever" in boot["console_tail"]
    assert boot["boot_seconds"] >= 90
    assert elapsed < 90 + 120
    _clean(short_tmpdir)


def test_a_custom_console_expect_on_the_stock_uki_that_powers_off_after_printing(run_playbook, uki, short_tmpdir):
    """build-uki.sh's own init prints 'guest-init done' and powers off at once: the line still counts."""
    run = run_playbook(BOOT, extra_vars={"uki": uki, "console_expect": "^guest-init done$"},
                       env={"TMPDIR": short_tmpdir})
    boot = run.task("Boot")
    assert not boot.get("failed"), boot.get("msg")
    assert boot["reached_userspace"] is True
    assert boot["console_tail"][-1] == "guest-init done" or "guest-init done" in boot["console_tail"]
    assert any(line.startswith("guest-pcr sha384 4 ") for line in boot["console_tail"])
    _clean(short_tmpdir)
