# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""x86_64, arm64 and aarch64 are accepted at every public entry point that takes an architecture (measured_boot's
arch, the manifest's image.architecture, the architecture filter), and anything else is refused naming the input
and the accepted names. Real ansible-playbook runs; nothing boots (a missing UKI stops measured_boot after its
arch was accepted)."""
import json

import pytest

SPELLINGS = ["x86_64", "arm64", "aarch64"]

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: measured_boot
      attestable.ami.measured_boot: {uki: /nonexistent/uki.efi, arch: "{{ arch }}"}
      ignore_errors: true
    - name: manifest
      attestable.ami.attestation_manifest:
        path: "{{ path }}"
        sections: {image: {name: img, version: 1.0.0, architecture: "{{ arch }}"}}
      ignore_errors: true
    - name: filter
      ansible.builtin.set_fact:
        names:
          aws: "{{ arch | attestable.ami.architecture }}"
          uefi: "{{ arch | attestable.ami.architecture('uefi') }}"
          kiwi: "{{ arch | attestable.ami.architecture('kiwi') }}"
          qemu: "{{ arch | attestable.ami.architecture('qemu') }}"
          debian: "{{ arch | attestable.ami.architecture('debian') }}"
      ignore_errors: true
"""

NAMES = {
    "x86_64": {"aws": "x86_64", "uefi": "X64", "kiwi": "x86_64", "qemu": "x86_64", "debian": "amd64"},
    "arm64": {"aws": "arm64", "uefi": "AA64", "kiwi": "aarch64", "qemu": "aarch64", "debian": "arm64"},
    "aarch64": {"aws": "arm64", "uefi": "AA64", "kiwi": "aarch64", "qemu": "aarch64", "debian": "arm64"},
}


@pytest.mark.parametrize("arch", SPELLINGS)
def test_every_spelling_is_accepted(run_playbook, tmp_path, arch):
    path = tmp_path / "manifest.json"
    run = run_playbook(PLAYBOOK, {"arch": arch, "path": str(path)})
    assert run.rc == 0, run.stdout[-2000:]
    booted = run.task("measured_boot")
    assert booted["failed"] and "uki: /nonexistent/uki.efi is not a file" in booted["msg"], booted["msg"]
    assert not run.task("manifest").get("failed"), run.task("manifest")
    assert json.loads(path.read_text())["image"]["architecture"] == arch  # recorded as the user wrote it
    assert run.task("filter")["ansible_facts"]["names"] == NAMES[arch]


@pytest.mark.parametrize("arch", ["sparc", "amd64", "ARM64", "x86-64"])
def test_other_names_are_refused_naming_the_input(run_playbook, tmp_path, arch):
    path = tmp_path / "manifest.json"
    run = run_playbook(PLAYBOOK, {"arch": arch, "path": str(path)})
    assert run.rc == 0, run.stdout[-2000:]
    booted = run.task("measured_boot")["msg"]
    assert "arch" in booted and "x86_64, arm64, aarch64" in booted and arch in booted, booted
    manifest = run.task("manifest")
    assert manifest["failed"] and ("sections.image.architecture: %r is not supported (expected one of x86_64, arm64, "
                                   "aarch64)" % arch) in manifest["msg"], manifest["msg"]
    assert not path.exists()
    names = run.task("filter")
    assert names["failed"] and ("architecture: architecture: %r is not supported" % arch) in names["msg"], names["msg"]
