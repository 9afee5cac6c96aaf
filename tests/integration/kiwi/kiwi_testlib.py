"""Helpers for the describe-and-build tests: the machine's apt mirror, Debian test descriptions, a playbook runner
that can serve module-scoped fixtures (the real builds are shared by all tests of a module)."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
DESCRIPTIONS = os.path.join(HERE, "descriptions")


def debian_mirror():
    """The Debian mirror this machine's apt uses (deb822 .sources or one-line sources.list entries)."""
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    files += sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        if not os.path.isfile(path):
            continue
        with open(path) as handle:
            text = handle.read()
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", stanza, re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and "bookworm" in suites and fields.get("Enabled", "yes") != "no":
                    return fields["URIs"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                match = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if match:
                    return match.group(1).rstrip("/")
    pytest.skip("no Debian bookworm mirror in this machine's apt sources")


def render_debian_description(name, dest):
    """Copy a test description to dest with the machine's mirror filled in; returns dest."""
    shutil.copytree(os.path.join(DESCRIPTIONS, name), dest)
    path = os.path.join(dest, "appliance.kiwi")
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text.replace("@MIRROR@", debian_mirror()))
    return dest


def run_playbook_text(playbook, workdir, extra_vars=None, check=False, inventory=None):
    """Run a playbook (YAML text, or a playbook file) with the json callback; returns (proc, {task name: [host results]}, json).

    Each host result carries its host name under "_host". inventory: a dict {host: {var: value}} of hosts
    that all run locally (each one a separate set of role variables).
    """
    if "\n" in playbook:
        path = os.path.join(str(workdir), "playbook-%d.yml" % len(os.listdir(str(workdir))))
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(playbook))
    else:
        path = playbook  # an existing playbook file, run where it lies (its includes are relative to it)
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), path]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if inventory is not None:
        inventory_path = os.path.join(str(workdir), "inventory-%d.json" % len(os.listdir(str(workdir))))
        hosts = {}
        for host, host_vars in inventory.items():
            hosts[host] = dict(host_vars, ansible_connection="local", ansible_python_interpreter=sys.executable)
        with open(inventory_path, "w") as handle:
            json.dump({"all": {"hosts": hosts}}, handle)
        cmd += ["-i", inventory_path]
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    })
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    results = {}
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"plays": []}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for host, host_result in task.get("hosts", {}).items():
                host_result["_host"] = host
                results.setdefault(task["task"]["name"], []).append(host_result)
    return proc, results, data
