# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""attestable.ami.build_and_publish against a builder reached over real SSH (ssh_builder.py), up to the build.

Real: sshd on 127.0.0.1, the SSH connection, become through sudo, the copy of the description, kiwi_validate
and kiwi-ng (a real Debian build) on the builder under its own Python 3.9, the background build followed with a
delegated async_status. The builder cannot see the controller's virtualenv, as a real one could not.
The description is the small Debian erofs image of tests/integration/kiwi (about a minute to build), so the
pipeline stops, as it must, where an attestable image needs a disk and a UKI; tests/integration/demo runs the
whole pipeline (UEFI disk, measurements, publish) on a local builder.
"""
import json
import os
import sys

import pytest

import playbook_runner

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kiwi"))
from kiwi_testlib import render_debian_description  # noqa: E402

PIPELINE = os.path.join(playbook_runner.ROOT, "playbooks", "build_and_publish.yml")


def _by_task_name(results):
    """Results keyed by the task's own name (the json callback prefixes role tasks with "namespace.collection.role : ")."""
    named = {}
    for name, host_results in results.items():
        named.setdefault(name.split(" : ", 1)[-1], []).extend(host_results)
    return named


def _extra_vars(ssh_builder, tmp_path, description):
    return {
        "builder_mode": "existing",
        "builder_host": "ssh-builder",
        "builder_host_vars": ssh_builder.host_vars(),
        "builder_install_packages": False,
        "attestable_description_path": description,
        "attestable_artifacts_dir": str(tmp_path / "artifacts"),
        "attestable_remote_dir": str(tmp_path / "builder"),
        "attestable_aws_region": "us-east-1",
        "image_build_require_attestable": False,
        "image_build_poll_interval": 5,
    }


@pytest.mark.slow
def test_pipeline_builds_on_an_ssh_builder_with_its_own_interpreter(ssh_builder, tmp_path):
    description = render_debian_description("debian-erofs", str(tmp_path / "description"))
    # A file the description no longer has must not reach the build (it would change what KIWI builds).
    stale = tmp_path / "builder" / "description" / "stale.sh"
    stale.parent.mkdir(parents=True)
    stale.write_text("#!/bin/sh\n")

    proc, results, _data = playbook_runner.run(PIPELINE, tmp_path, extra_vars=_extra_vars(ssh_builder, tmp_path, description))
    results = _by_task_name(results)

    # The pipeline ran the build to its end and then refused the result: no disk, so no UKI, nothing to publish.
    assert proc.returncode != 0
    assert "Require a disk and a UKI, the parts an attestable image consists of" in results, proc.stdout[-3000:]
    refusal = results["Require a disk and a UKI, the parts an attestable image consists of"][-1]
    assert refusal.get("failed") and "produced no disk" in refusal["msg"], proc.stdout[-3000:]
    assert "Upload the disk image to an EBS snapshot" not in results

    # Everything on the builder went through SSH to 127.0.0.1:<port>.
    validation = results["Validate the description on the builder with the builder's own KIWI"][-1]
    assert validation["_ansible_delegated_vars"]["ansible_host"] == "127.0.0.1"
    assert int(validation["_ansible_delegated_vars"]["ansible_port"]) == ssh_builder.port
    assert validation["description"]["name"] == "debian-erofs"

    # Before the build: builder, run id and log path.
    announce = results["Say where the build runs and where its log is"][-1]["msg"]
    assert "ssh-builder" in announce and "(run 2" in announce and str(tmp_path / "builder" / "kiwi-build.log") in announce

    # The build ran in the background and was followed with progress lines from KIWI's log, to its end.
    polls = results["Check on the KIWI build"]
    assert len(polls) >= 2 and not polls[0]["finished"] and polls[-1]["finished"] and polls[-1]["changed"]
    assert polls[-1]["kiwi_version"] == validation["kiwi_version"]
    progress = [r["msg"] for r in results["Show the build's progress"] if "msg" in r]
    assert progress and all(m.startswith("KIWI on ssh-builder, ") for m in progress)

    # The description arrived whole, without the stale file; KIWI's log is next to the artifacts.
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path / "builder" / "description")) == sorted(os.listdir(description))
    # kiwi_build runs the kiwi-ng beside its interpreter: KIWI's log shows the builder's Python 3.9 KIWI at work.
    log = (tmp_path / "artifacts" / "kiwi-build.log").read_text()
    builder_kiwi = os.path.join(os.path.dirname(os.path.dirname(ssh_builder.python)), "lib", "python3.9", "site-packages", "kiwi")
    assert builder_kiwi in log
    assert "Result files:" in log
    assert not (tmp_path / "artifacts" / "manifest.json").exists()


def test_delegated_async_polling_would_use_the_controllers_interpreter(ssh_builder, tmp_path):
    """The condition image_build's delegated async_status loop avoids (ansible/ansible#86479): with poll > 0, a
    delegated async task is polled with the controller's interpreter, which this builder does not have."""
    playbook = """
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: Add the builder
          ansible.builtin.add_host:
            name: ssh-builder
        - name: Give it its connection variables
          ansible.builtin.set_fact:
            "{{ item.key }}": "{{ item.value }}"
          delegate_to: ssh-builder
          delegate_facts: true
          loop: "{{ host_vars | dict2items }}"
        - name: Wait on the builder with ansible's own polling
          ansible.builtin.command: sleep 1
          delegate_to: ssh-builder
          become: true
          async: 6
          poll: 1
    """
    proc, results, _data = playbook_runner.run(playbook, tmp_path, extra_vars={"host_vars": ssh_builder.host_vars()})
    polled = results["Wait on the builder with ansible's own polling"][-1]
    assert proc.returncode != 0 and polled.get("failed")
    assert os.path.dirname(os.path.dirname(sys.executable)) in json.dumps(polled) or \
        os.path.realpath(os.path.dirname(os.path.dirname(sys.executable))) in json.dumps(polled)
