# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One KIWI build of the image_description role's Debian flavour, shared by every test module that needs a real
attestable UEFI disk (tests/integration/kiwi, tests/integration/verity): a build takes minutes on 2 cores, so the
session builds it once (the `debian_uefi_build` fixture in conftest.py)."""
import json
import os
import sys
import time

import playbook_runner

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "kiwi"))

from kiwi_testlib import debian_mirror  # noqa: E402

BUILD_PLAYBOOK = os.path.join(HERE, "kiwi", "playbooks", "build.yml")
RENDER_PLAYBOOK = """
- name: Render the Debian flavour
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_description
  tasks:
    - name: Report the rendering
      ansible.builtin.debug:
        var: image_description_result
"""


def vfat_available():
    with open("/proc/filesystems") as handle:
        if "vfat" in handle.read().split():
            return True
    return os.path.isfile("/sbin/mount.vfat")


def build(workdir):
    """Render and build; returns {description, rendering, build (kiwi_build's result), seconds, workdir}."""
    description = str(workdir / "description")
    proc, results, _data = playbook_runner.run(RENDER_PLAYBOOK, workdir, extra_vars={
        "image_description_distribution": "debian", "image_description_name": "debian-attestable",
        "image_description_dest": description,
        # The machine's own apt mirror: apt checks the archive's signatures either way (repository_gpgcheck).
        "image_description_debian_mirror": debian_mirror()})
    assert proc.returncode == 0, proc.stdout[-4000:]
    rendering = results["Report the rendering"][-1]["image_description_result"]
    started = time.time()
    for attempt in range(3):
        target = workdir / ("image-%d" % attempt)
        proc, results, _data = playbook_runner.run(BUILD_PLAYBOOK, workdir, extra_vars={
            "description": description, "target_dir": str(target)})
        result = results.get("Build the image", [{}])[-1]
        # Another build on this machine may hold KIWI's shared apt cache lock: wait for it, once or twice.
        if proc.returncode != 0 and "Could not get lock" in json.dumps(result) and attempt < 2:
            time.sleep(60)
            continue
        break
    assert proc.returncode == 0, json.dumps(result, indent=1)[-6000:]
    return {"description": description, "rendering": rendering, "build": result,
            "seconds": time.time() - started, "workdir": workdir}
