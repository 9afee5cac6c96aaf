# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestable.ami.kiwi_build through ansible-playbook: the UKI taken from the built disk's ESP when the hook does
not copy it (uki_source), and kiwi-ng's environment (the `environment` option, SYSTEMD_RELAX_ESP_CHECKS=1 when the
kernel has no vfat).

kiwi-ng is a stand-in here (a real KIWI UEFI build is tests/integration/kiwi's job): a script that answers
--version, records the environment it was given, and leaves what KIWI leaves, a kiwi.result.json and a real GPT
disk whose ESP boots the test UKI (made by uki_to_disk.py beside this test, with mkfs.vfat, mtools and sgdisk). The module
reads that ESP with its own GPT and FAT code, without mtools and without mounting."""
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import build as kb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
UEFI = os.path.join(HERE, "descriptions", "uefi-attestable")

STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

pytestmark = [
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("mkfs.vfat", "mcopy", "mmd", "sgdisk", "objcopy"))
                       or not os.path.isfile(STUB),
                       reason="dosfstools, mtools, gdisk, binutils or systemd-boot-efi not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="kiwi_build refuses to run without root"),
]

UKI_TO_DISK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "uki_to_disk.py")
STAND_IN = r'''#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("KIWI (next generation) version 11.1.6")
    sys.exit(0)
log = args[args.index("--logfile") + 1]
target = args[args.index("--target-dir") + 1]
with open(log, "a") as handle:
    handle.write("[ INFO    ]: 00:00:01 | stand-in build\n")
with open(os.path.join(target, "environment.json"), "w") as handle:
    json.dump({{k: os.environ.get(k) for k in ("SYSTEMD_RELAX_ESP_CHECKS", "MY_PROXY")}}, handle)
disk = os.path.join(target, "img.x86_64-1.0.0.raw")
subprocess.check_call([sys.executable, {uki_to_disk!r}, {uki!r}, disk], stdout=subprocess.DEVNULL)
with open(os.path.join(target, "kiwi.result.json"), "w") as handle:
    json.dump({{"disk_image": {{"filename": disk, "compress": False, "shasum": True, "use_for_bundle": True}}}}, handle)
'''

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: build
      attestable.ami.kiwi_build:
        description: "{{ description }}"
        target_dir: "{{ target }}"
        kiwi_ng: "{{ kiwi_ng }}"
        environment: "{{ env | default({}) }}"
      timeout: 300
"""


@pytest.fixture
def setup(tmp_path):
    description = tmp_path / "description"
    shutil.copytree(UEFI, str(description))
    # A UKI as dracut makes one: systemd's stub with a .linux section (random bytes stand for the kernel).
    kernel = tmp_path / "kernel"
    kernel.write_bytes(os.urandom(1024 * 1024))
    uki = tmp_path / "uki.efi"
    subprocess.run(["objcopy", "--add-section", ".linux=%s" % kernel, "--change-section-vma", ".linux=0x2000000",
                    STUB, str(uki)], check=True)
    kiwi_ng = tmp_path / "kiwi-ng"
    kiwi_ng.write_text(STAND_IN.format(python=sys.executable, uki_to_disk=UKI_TO_DISK,
                                       uki=str(uki)))
    kiwi_ng.chmod(kiwi_ng.stat().st_mode | stat.S_IXUSR)
    return {"description": str(description), "target": str(tmp_path / "image"), "kiwi_ng": str(kiwi_ng),
            "uki": uki.read_bytes()}


def test_uki_from_the_esp_and_the_environment(run_playbook, setup):
    result = run_playbook(PLAYBOOK, {"description": setup["description"], "target": setup["target"],
                                     "kiwi_ng": setup["kiwi_ng"], "env": {"MY_PROXY": "http://proxy:3128"}})
    task = result.task("build")
    assert result.rc == 0, task.get("msg")
    assert task["uki_source"] == "esp"
    assert task["uki"] == os.path.join(setup["target"], "img.x86_64-1.0.0.efi")
    with open(task["uki"], "rb") as handle:
        assert handle.read() == setup["uki"]
    relax = kb.kernel_has_vfat() is False
    expected = dict({"MY_PROXY": "http://proxy:3128"}, **({"SYSTEMD_RELAX_ESP_CHECKS": "1"} if relax else {}))
    assert task["environment"] == expected
    with open(os.path.join(setup["target"], "environment.json")) as handle:
        seen = json.load(handle)
    assert seen == {"SYSTEMD_RELAX_ESP_CHECKS": "1" if relax else None, "MY_PROXY": "http://proxy:3128"}

    again = run_playbook(PLAYBOOK, {"description": setup["description"], "target": setup["target"],
                                    "kiwi_ng": setup["kiwi_ng"], "env": {"MY_PROXY": "http://proxy:3128"}})
    task = again.task("build")
    assert task["changed"] is False and task["uki_source"] == "esp" and task["uki"].endswith(".efi")

    changed_env = run_playbook(PLAYBOOK, {"description": setup["description"], "target": setup["target"],
                                          "kiwi_ng": setup["kiwi_ng"], "env": {"MY_PROXY": "http://other:3128"}})
    task = changed_env.task("build")
    assert task["changed"] is True and "environment" in task["reason"]


def test_bad_environment_name_is_refused(run_playbook, setup):
    result = run_playbook(PLAYBOOK, {"description": setup["description"], "target": setup["target"],
                                     "kiwi_ng": setup["kiwi_ng"], "env": {"NOT-A-NAME": "x"}})
    task = result.task("build")
    assert result.rc != 0 and "NOT-A-NAME" in task["msg"] and "not a variable name" in task["msg"]
    assert not os.path.exists(setup["target"])
