# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run every molecule scenario (molecule/<name>/) the way a role developer would: `molecule test -s <name>`.

Molecule's default driver with managed: false runs on this machine (no containers here); the AWS scenarios
start and stop their own moto server. Each scenario's converge, idempotence (changed=0) and verify must pass.
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCENARIOS = sorted(name for name in os.listdir(os.path.join(ROOT, "molecule"))
                   if os.path.isfile(os.path.join(ROOT, "molecule", name, "molecule.yml")))


def test_the_roles_and_the_authorize_playbook_have_a_scenario():
    # image_build runs a KIWI build (minutes): the pipeline and demo tests run it for real instead.
    wanted = set(os.listdir(os.path.join(ROOT, "roles"))) - {"image_build"} | {"authorize"}
    assert wanted <= set(SCENARIOS), "scenarios missing for %s" % sorted(wanted - set(SCENARIOS))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "molecule"), "test", "-s", scenario],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Idempotence test failed" not in output
    for action in ("converge", "verify"):
        assert re.search(r"%s \S+ %s: Executed: Successful" % (scenario, action), output), output[-3000:]
