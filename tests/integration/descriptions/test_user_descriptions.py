"""The three user-style descriptions of tests/descriptions/ (issue 11): each role_vars.yml is rendered through the
image_description role, and the rendering is compared with the hand-written description/ folder by what KIWI and the
image make of them, not by text: packages (image, bootstrap, ignored), repositories with their options, the <type>
attributes and kernel command line, the boot loader and initrd sections, users and groups, every overlay file with
its content, mode and owner after config.sh, the config.sh steps, the edit-boot hook's extra steps and the
attestation-critical rest of the hook, extra top-level files. Both are validated with the installed KIWI (its loader,
RelaxNG + Schematron + the pre-build checks) and, when jing is installed, with KIWI 10.2.23's schema (the oldest the
role claims), and neither has an unattestable finding."""
import gzip
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml

import playbook_runner
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import findings as kf

pytest.importorskip("kiwi")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DESCRIPTIONS = os.path.join(ROOT, "descriptions")
NAMES = ["ci-runner", "db-appliance", "enclave"]
RENDER_ALL = os.path.join(ROOT, "integration", "kiwi", "playbooks", "render_all.yml")
OLDEST_SCHEMA = os.path.join(ROOT, "integration", "kiwi", "schema", "kiwi-10.2.23.rng.gz")
HOOK_WINDOW = ('rm -rf "$work/esp/EFI/Linux" "$work/esp/EFI/systemd" "$work/esp/loader"',
               'cp "$work/esp/EFI/BOOT/$efi_boot_file" "$artifact.efi"')


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every description's role_vars.yml rendered by the role (one playbook run, one host per description)."""
    tmp_path = tmp_path_factory.mktemp("user-descriptions")
    inventory = {}
    for name in NAMES:
        folder = os.path.join(DESCRIPTIONS, name)
        with open(os.path.join(folder, "role_vars.yml")) as handle:
            variables = yaml.safe_load(handle)
        variables.update(role_vars_dir=folder, image_description_dest=str(tmp_path / name))
        inventory[name.replace("-", "_")] = variables
    proc, results, _data = playbook_runner.run(RENDER_ALL, tmp_path, inventory=inventory)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    records = dict((r["image_description_result"]["path"], r["image_description_result"])
                   for r in results["Report the rendering"])
    return dict((name, (str(tmp_path / name), records[str(tmp_path / name)])) for name in NAMES)


# ---- what a description means -------------------------------------------------------------------------------------

def _xml(folder):
    return ET.parse(os.path.join(folder, "appliance.kiwi")).getroot()


def _repositories(root):
    repos = []
    for repo in root.findall("repository"):
        attributes = dict(repo.attrib)
        attributes.setdefault("sourcetype", "baseurl")
        source = repo.find("source")
        repos.append({"attributes": attributes, "source": source.get("path"),
                      "signing": sorted(key.get("key") for key in source.findall("signing"))})
    return repos


def _users(root):
    users = []
    for user in root.findall("users/user"):
        attributes = dict(user.attrib)
        attributes["groups"] = attributes.get("groups", "").split(",")
        users.append(attributes)
    return sorted(users, key=lambda user: user["name"])


def _type(root):
    build_type = root.find("preferences/type")
    attributes = dict(build_type.attrib)
    cmdline = attributes.pop("kernelcmdline").split()
    return {"attributes": attributes, "kernelcmdline": cmdline,
            "bootloader": build_type.find("bootloader").attrib,
            "initrd": [(i.get("action"), [dict(d.attrib) for d in i]) for i in build_type.findall("initrd")],
            "oemconfig": [(c.tag, (c.text or "").strip()) for c in build_type.find("oemconfig")],
            "size": [(s.get("unit"), s.text) for s in build_type.findall("size")]}


def _packages(root):
    sections = {}
    for section in root.findall("packages"):
        entry = sections.setdefault(section.get("type"), {"package": set(), "ignore": set(), "namedCollection": set()})
        for child in section:
            if isinstance(child.tag, str):
                entry[child.tag].add(child.get("name"))
    return sections


def _script_lines(path):
    """Commands of a shell script: no comments, no blank lines, whitespace normalised."""
    lines = []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()))
    return lines


def _config_steps(folder):
    """config.sh as steps: units per verb, groups, the forbidden-package check, chown/chmod, and the other commands
    in order (fragments). Subshell parentheses and the `set` line are form, not content."""
    steps = {"enable": set(), "disable": set(), "mask": set(), "preset": set(), "groupadd": {}, "forbidden": set(),
             "ownership": [], "commands": []}
    in_check = False  # the Debian check of forbidden packages closes config.sh
    for line in _script_lines(os.path.join(folder, "config.sh")):
        if line.startswith("found="):
            in_check = True
        if in_check:
            match = re.match(r"^for package in (.*); do$", line)
            if match:
                steps["forbidden"] = set(shlex.split(match.group(1)))
            continue
        words = shlex.split(line.replace(" || true", ""))
        if line in ("(", ")") or line.startswith(("set -", ": ")):  # form, and shell no-ops
            continue
        if words[:1] == ["systemctl"] and len(words) == 3 and words[1] in ("enable", "disable", "mask", "preset"):
            steps[words[1]].add(words[2])
        elif words[:2] == ["getent", "group"] and "groupadd" in words:
            gid = words[words.index("-g") + 1] if "-g" in words else None
            steps["groupadd"][words[-1]] = gid
        elif words[:1] in (["chown"], ["chmod"]) or (words[:1] == ["find"] and "chmod" in words):
            steps["ownership"].append(words)
        else:
            steps["commands"].append(line)
    return steps


def _overlay(folder):
    """Every file under root/: (kind, sha256 or link target, mode, owner, group) after config.sh's chown/chmod."""
    base = os.path.join(folder, "root")
    files = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(path, base)
            if os.path.islink(path):
                files[rel] = {"kind": "link", "content": os.readlink(path), "mode": None, "owner": "root", "group": "root"}
                continue
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            files[rel] = {"kind": "file", "content": digest, "mode": "%04o" % (os.stat(path).st_mode & 0o7777),
                          "owner": "root", "group": "root"}
        for name in dirnames:
            rel = "/" + os.path.relpath(os.path.join(dirpath, name), base)
            files[rel + "/"] = {"kind": "dir", "mode": "%04o" % (os.stat(os.path.join(dirpath, name)).st_mode & 0o7777),
                                "owner": "root", "group": "root"}
    for words in _config_steps(folder)["ownership"]:
        _apply(files, words)
    return files


def _under(files, target, recursive):
    target = target.rstrip("/")
    for rel in files:
        plain = rel.rstrip("/")
        if plain == target or (recursive and plain.startswith(target + "/")):
            yield rel


def _apply(files, words):
    """Apply one chown/chmod/find-chmod line of config.sh to the overlay's files (as KIWI's chroot would)."""
    if words[0] == "chown":
        recursive = "-R" in words
        spec, target = words[-2], words[-1]
        owner, _sep, group = spec.partition(":")
        matched = list(_under(files, target, recursive))
        assert matched, "config.sh chowns %s, which root/ does not hold" % target
        for rel in matched:
            if owner:
                files[rel]["owner"] = owner
            if group:
                files[rel]["group"] = group
    elif words[0] == "chmod":
        matched = list(_under(files, words[-1], False))
        assert matched, "config.sh chmods %s, which root/ does not hold" % words[-1]
        for rel in matched:
            files[rel]["mode"] = "%04o" % int(words[1], 8)
    else:  # find PATH -type d|f -exec chmod MODE {} +
        target, kind, mode = words[1], words[words.index("-type") + 1], words[words.index("chmod") + 1]
        for rel in _under(files, target, True):
            if files[rel]["kind"] == {"d": "dir", "f": "file"}[kind]:
                files[rel]["mode"] = "%04o" % int(mode, 8)


def _hook(folder):
    """The edit-boot hook as (steps added before the boot file is copied out, everything else)."""
    path = os.path.join(folder, "edit_boot_install.sh")
    if not os.path.exists(path):
        return None
    lines = _script_lines(path)
    start, end = lines.index(HOOK_WINDOW[0]), lines.index(HOOK_WINDOW[1])
    steps = []
    skip = False
    for line in lines[start + 1:end]:
        if line.startswith('if [ "$(head -c 2 "$uki"'):  # the role's own check after the steps
            skip = True
        if not skip and line not in ("(", ")") and not line.startswith('uki="$work/esp/EFI/BOOT/'):
            steps.append(line)
        if skip and line == "fi":
            skip = False
    return {"steps": steps, "rest": lines[:start + 1] + lines[end:]}


def _extra_files(folder):
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in ("appliance.kiwi", "config.sh", "edit_boot_install.sh", "root") or not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            found[name] = (hashlib.sha256(handle.read()).hexdigest(), "%04o" % (os.stat(path).st_mode & 0o777))
    return found


def meaning(folder):
    root = _xml(folder)
    return {
        "image": (root.get("name"), root.get("schemaversion"), root.find("preferences/version").text),
        "preferences": sorted((c.tag, (c.text or "").strip()) for c in root.find("preferences") if c.tag != "type"
                              and isinstance(c.tag, str)),
        "type": _type(root),
        "repositories": _repositories(root),
        "users": _users(root),
        "packages": _packages(root),
        "config": _config_steps(folder),
        "overlay": _overlay(folder),
        "hook": _hook(folder),
        "extra_files": _extra_files(folder),
    }


# ---- the tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_role_rendering_means_the_hand_written_description(rendered, name):
    dest, record = rendered[name]
    hand = meaning(os.path.join(DESCRIPTIONS, name, "description"))
    role = meaning(dest)
    for aspect in ("image", "preferences", "type", "repositories", "users", "packages", "extra_files"):
        assert role[aspect] == hand[aspect], (aspect, role[aspect], hand[aspect])
    for part in ("enable", "disable", "mask", "preset", "groupadd", "forbidden", "commands"):
        assert role["config"][part] == hand["config"][part], ("config.sh " + part, role["config"][part], hand["config"][part])
    assert sorted(role["overlay"]) == sorted(hand["overlay"])
    for path in sorted(hand["overlay"]):
        assert role["overlay"][path] == hand["overlay"][path], (path, role["overlay"][path], hand["overlay"][path])
    assert role["hook"] == hand["hook"]
    assert record["attestable"] is True and record["operator_access"] == []


def test_what_each_description_exercises(rendered):
    """Guards against a comparison that passes because both sides lack what the description is about."""
    ci = meaning(rendered["ci-runner"][0])
    security = [r for r in ci["repositories"] if r["attributes"]["alias"] == "debian-security"][0]
    assert security["attributes"]["priority"] == "600" and security["attributes"]["customize"] == "customize-security-repo.sh"
    assert security["signing"] == ["file:///usr/share/keyrings/debian-archive-keyring.gpg"]
    assert "customize-security-repo.sh" in ci["extra_files"] and ci["extra_files"]["customize-security-repo.sh"][1] == "0755"
    assert ci["overlay"]["/opt/ci-runner/bin/ci-runner"]["group"] == "ci"
    assert ci["overlay"]["/opt/ci-runner/bin/ci-runner"]["mode"] == "0755"
    assert ci["overlay"]["/opt/ci-runner/etc/runner.conf"]["mode"] == "0644"
    assert {"ci-runner.service", "ci-runner-cleanup.timer"} <= ci["config"]["enable"]
    assert "git config --system safe.directory '*'" in ci["config"]["commands"]
    assert ci["users"][0]["password"] == "!" and ci["users"][0]["shell"] == "/usr/sbin/nologin"

    db = meaning(rendered["db-appliance"][0])
    assert db["type"]["kernelcmdline"][-1] == "fips=1"
    conf = db["overlay"]["/etc/postgresql/15/main/conf.d/appliance.conf"]
    assert (conf["owner"], conf["group"], conf["mode"]) == ("postgres", "postgres", "0640")
    env = db["overlay"]["/etc/db-appliance/appliance.env"]
    assert (env["owner"], env["group"], env["mode"]) == ("dbadmin", "dbops", "0640")
    assert db["overlay"]["/etc/db-appliance/"]["mode"] == "0750"
    assert {"apt-daily.timer", "fstrim.timer"} <= db["config"]["mask"]
    assert [u["groups"] for u in db["users"]] == [["dbops:2001"], ["dbops:2001", "postgres"]]
    assert db["config"]["groupadd"] == {"dbops": "2001"}

    enclave = meaning(rendered["enclave"][0])
    assert any(line.startswith("sbsign ") for line in enclave["hook"]["steps"])
    assert {"ssh.service", "ssh.socket", "getty.target"} <= enclave["config"]["mask"]
    assert "set-hostname-imds.service" not in enclave["config"]["enable"]
    assert "/usr/local/sbin/set-hostname-imds" not in enclave["overlay"]


@pytest.mark.parametrize("name", NAMES)
def test_both_forms_pass_kiwi_and_are_attestable(rendered, name, tmp_path):
    for folder in (rendered[name][0], os.path.join(DESCRIPTIONS, name, "description")):
        summary = kd.load_description(folder)  # KIWI's loader: RelaxNG, Schematron, pre-build checks, references
        assert kd.attestation_findings(summary) == [], folder
        unattestable = [kf.line(f) for f in kf.description_findings(summary, folder) if f["severity"] == kf.UNATTESTABLE]
        assert unattestable == [], (folder, unattestable)
        if shutil.which("jing"):
            schema = tmp_path / "kiwi-10.2.23.rng"
            with gzip.open(OLDEST_SCHEMA, "rb") as source:
                schema.write_bytes(source.read())
            check = subprocess.run(["jing", str(schema), os.path.join(folder, "appliance.kiwi")],
                                   capture_output=True, text=True, check=False)
            assert check.returncode == 0, (folder, check.stdout)


@pytest.mark.parametrize("name", NAMES)
def test_scripts_are_valid_bash(rendered, name):
    for folder in (rendered[name][0], os.path.join(DESCRIPTIONS, name, "description")):
        for script in ("config.sh", "edit_boot_install.sh"):
            check = subprocess.run(["bash", "-n", os.path.join(folder, script)], capture_output=True, text=True,
                                   check=False)
            assert check.returncode == 0, (folder, script, check.stderr)
