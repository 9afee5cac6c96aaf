# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the bring-your-own-description tests: the user's folder as it is on disk (to prove the pipeline
never writes into it), the pipeline's results by task name, the user-style descriptions that exist."""
import glob
import hashlib
import os
import shutil
import stat

import yaml

import playbook_runner

ROOT = playbook_runner.ROOT
PIPELINE = os.path.join(ROOT, "playbooks", "build_and_publish.yml")
LOCAL_PROFILE = os.path.join(ROOT, "playbooks", "vars", "local.yml")
HERE = os.path.dirname(os.path.abspath(__file__))


def user_descriptions():
    """The user-style description folders of tests/descriptions/<name>/description (whichever exist), plus the
    bring-your-own folder of the kiwi_validate tests (hook, customize script, this:// key, archive)."""
    found = sorted(glob.glob(os.path.join(ROOT, "tests", "descriptions", "*", "description")))
    found = [path for path in found if os.path.isdir(path)]
    found.append(os.path.join(ROOT, "tests", "integration", "kiwi_modules", "descriptions", "uefi-attestable"))
    return found


def description_id(path):
    parts = path.split(os.sep)
    return parts[-2] if parts[-1] == "description" else parts[-1]


def copy_folder(src, dest):
    """The user's folder: a copy with modes and symbolic links as they are (the repository's stays untouched)."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def tree_state(path):
    """Every entry under path: kind, mode, modification time, and content digest (link target for links)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            info = os.lstat(full)
            rel = os.path.relpath(full, path)
            if stat.S_ISLNK(info.st_mode):
                content = "link:" + os.readlink(full)
            elif stat.S_ISREG(info.st_mode):
                with open(full, "rb") as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            else:
                content = stat.S_IFMT(info.st_mode)
            state[rel] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_mtime_ns, content)
    info = os.lstat(path)
    state["."] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_mtime_ns, None)
    return state


def by_task_name(results):
    """Results keyed by the task's own name (the json callback prefixes role tasks with "ns.collection.role : ")."""
    named = {}
    for name, host_results in results.items():
        named.setdefault(name.split(" : ", 1)[-1], []).extend(host_results)
    return named


def failures(results):
    return [r for host_results in results.values() for r in host_results if r.get("failed")]


def run_pipeline(workdir, extra_vars, check=False, env=None, profile=None):
    """ansible-playbook attestable.ami.build_and_publish with the profile's variables (a vars file such as
    playbooks/vars/local.yml) overridden by extra_vars; returns (proc, results by task name)."""
    merged = {}
    if profile:
        with open(profile) as handle:
            merged.update(yaml.safe_load(handle))
    merged.update(extra_vars)
    proc, results, _data = playbook_runner.run(PIPELINE, workdir, extra_vars=merged, check=check, env=env)
    return proc, by_task_name(results)
