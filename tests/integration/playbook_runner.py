# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a real ansible-playbook against local hosts with the json callback, and index its results by task name.

Used by the `run_playbook` fixture (tests/integration/conftest.py) and by module-scoped fixtures that cannot
take a function-scoped fixture (tests/integration/kiwi).
"""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(playbook, workdir, extra_vars=None, check=False, diff=False, env=None, args=(), inventory=None):
    """Run playbook (YAML text, or a playbook file run where it lies) from the repository root.

    inventory: {host: {var: value}} of hosts that all run locally (each its own set of variables); default
    the repository's inventory (localhost). Returns (CompletedProcess, {task name: [host results]}, json data);
    each host result carries its host name under "_host".
    """
    workdir = str(workdir)
    if "\n" in playbook:
        path = os.path.join(workdir, "playbook-%d.yml" % len(os.listdir(workdir)))
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(playbook))
        playbook = path
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), playbook]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if inventory is not None:
        inventory_path = os.path.join(workdir, "inventory-%d.json" % len(os.listdir(workdir)))
        hosts = dict((host, dict(host_vars, ansible_connection="local", ansible_python_interpreter=sys.executable))
                     for host, host_vars in inventory.items())
        with open(inventory_path, "w") as handle:
            json.dump({"all": {"hosts": hosts}}, handle)
        cmd += ["-i", inventory_path]
    cmd += list(args)
    full_env = dict(os.environ)
    full_env.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
    })
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"plays": []}
    results = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for host, host_result in task.get("hosts", {}).items():
                host_result["_host"] = host
                results.setdefault(task["task"]["name"], []).append(host_result)
    return proc, results, data
