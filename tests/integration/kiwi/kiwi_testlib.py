# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the describe-and-build tests: the machine's apt mirror, Debian test descriptions, a playbook runner
that can serve module-scoped fixtures (the real builds are shared by all tests of a module)."""
import glob
import os
import re
import shutil

import pytest

import playbook_runner

HERE = os.path.dirname(os.path.abspath(__file__))
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
    """Run a playbook (YAML text, or a playbook file) with the json callback; returns (proc, {task name: [host results]}, json)."""
    return playbook_runner.run(playbook, workdir, extra_vars=extra_vars, check=check, inventory=inventory)
