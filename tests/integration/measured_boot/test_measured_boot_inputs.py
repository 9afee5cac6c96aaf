# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""measured_boot refuses bad inputs with a message naming the input, before anything boots."""
import time

BAD_INPUTS = """
- hosts: localhost
  gather_facts: false
  vars:
    good: {HashAlgorithm: SHA384, PCR4: "{{ 'ab' * 48 }}", PCR7: "{{ 'cd' * 48 }}", PCR12: "{{ '0' * 96 }}"}
  tasks:
    - name: Missing uki
      attestable.ami.measured_boot: {uki: /nonexistent/uki.efi}
      ignore_errors: true
    - name: Both uki and disk
      attestable.ami.measured_boot: {uki: "{{ uki }}", disk: "{{ uki }}"}
      ignore_errors: true
    - name: Neither uki nor disk
      attestable.ami.measured_boot: {timeout: 10}
      ignore_errors: true
    - name: Missing firmware file
      attestable.ami.measured_boot: {uki: "{{ uki }}", firmware_code: /nonexistent/OVMF_CODE.fd}
      ignore_errors: true
    - name: Variable store that is not one
      attestable.ami.measured_boot: {uki: "{{ uki }}", firmware_vars: "{{ uki }}", pk: "{{ esl }}"}
      ignore_errors: true
    - name: Expected value not hex
      attestable.ami.measured_boot: {uki: "{{ uki }}", expected: "{{ good | combine({'PCR4': 'xyz'}) }}"}
      ignore_errors: true
    - name: Expected with another hash algorithm
      attestable.ami.measured_boot: {uki: "{{ uki }}", expected: "{{ good | combine({'HashAlgorithm': 'SHA256'}) }}"}
      ignore_errors: true
    - name: Expected with a key that is no PCR
      attestable.ami.measured_boot: {uki: "{{ uki }}", expected: "{{ good | combine({'PCR99': 'ab'}) }}"}
      ignore_errors: true
    - name: Expected without any PCR
      attestable.ami.measured_boot: {uki: "{{ uki }}", expected: {HashAlgorithm: SHA384}}
      ignore_errors: true
    - name: Disk that is not a GPT disk
      attestable.ami.measured_boot: {disk: "{{ uki }}"}
      ignore_errors: true
    - name: Malformed ESL
      attestable.ami.measured_boot: {uki: "{{ uki }}", pk: "{{ uki }}"}
      ignore_errors: true
    - name: Timeout not positive
      attestable.ami.measured_boot: {uki: "{{ uki }}", timeout: 0}
      ignore_errors: true
"""

EXPECTED_MESSAGES = {
    "Missing uki": ["uki: /nonexistent/uki.efi is not a file"],
    "Both uki and disk": ["mutually exclusive", "uki", "disk"],
    "Neither uki nor disk": ["one of the following is required", "uki", "disk"],
    "Missing firmware file": ["firmware_code: /nonexistent/OVMF_CODE.fd is not a file", "ovmf"],
    "Variable store that is not one": ["no edk2 variable store"],
    "Expected value not hex": ["expected: PCR4 must be 96 hexadecimal characters"],
    "Expected with another hash algorithm": ["HashAlgorithm 'SHA256' is not supported (expected SHA384)"],
    "Expected with a key that is no PCR": ["expected: key 'PCR99' is not a PCR"],
    "Expected without any PCR": ["expected: no PCR given"],
    "Disk that is not a GPT disk": ["disk:", "not a raw GPT disk image"],
    "Malformed ESL": ["pk:", "not a valid EFI signature list"],
    "Timeout not positive": ["timeout: 0 must be a positive number"],
}


def test_bad_inputs_fail_clearly_without_booting(run_playbook, uki, secure_boot):
    started = time.time()
    run = run_playbook(BAD_INPUTS, extra_vars={"uki": uki, "esl": secure_boot["esl"]})
    elapsed = time.time() - started
    assert run.rc == 0, run.stdout[-2000:]  # every failure was ignored, so the play completed
    for task, fragments in EXPECTED_MESSAGES.items():
        result = run.task(task)
        assert result.get("failed"), task
        for fragment in fragments:
            assert fragment in result["msg"], (task, result["msg"])
        assert "Traceback" not in result["msg"] and "module_stderr" not in result, task
        assert "duration" not in result, task  # nothing booted
    assert elapsed < 90  # twelve refusals, no boot (a boot alone takes 10-30 s)
