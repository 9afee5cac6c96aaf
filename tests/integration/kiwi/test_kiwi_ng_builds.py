# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_build end to end with the real kiwi-ng: a quick Debian erofs image (built in the background and followed
through its log) and an oem BIOS disk with the attestation-relevant root (overlayroot, erofs read-only
partition, dm-verity over all blocks). Each build runs once per module; every test reads the shared result.

Debian stands in for AL2023 because this machine has no AL2023 repository and cannot build EFI disks (no vfat):
the AL2023 description's UEFI/UKI parts are covered by the role tests (KIWI's validation), not by a build.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

from kiwi_testlib import render_debian_description, run_playbook_text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="kiwi-ng system build needs root")]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
BUILD_PLAYBOOK = os.path.join(HERE, "playbooks", "build.yml")


def run_build(workdir, description, target_dir, check=False, **extra):
    extra_vars = {"description": str(description), "target_dir": str(target_dir)}
    extra_vars.update(extra)
    proc, results, _data = run_playbook_text(BUILD_PLAYBOOK, workdir, extra_vars=extra_vars, check=check)
    return proc, results


def final_build(results):
    """The kiwi_build result: from the synchronous task, or the last async_status poll."""
    sync = results.get("Build the image", [{}])[-1]
    if not sync.get("skipped") and "Build the image" in results:
        return sync
    return results["Check on the build"][-1]


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def erofs_build(module_workdir):
    description = render_debian_description("debian-erofs", str(module_workdir / "debian-erofs"))
    target = module_workdir / "erofs-image"
    log_file = str(module_workdir / "erofs-build.log")
    proc, results = run_build(module_workdir, description, target, follow=True, log_file=log_file)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"description": description, "target": target, "log_file": log_file, "results": results,
            "build": final_build(results)}


@pytest.fixture(scope="module")
def oem_build(module_workdir):
    description = render_debian_description("debian-oem-verity", str(module_workdir / "debian-oem-verity"))
    target = module_workdir / "oem-image"
    proc, results = run_build(module_workdir, description, target)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {"description": description, "target": target, "results": results, "build": final_build(results)}


def test_erofs_build_returns_what_kiwi_result_json_lists(erofs_build):
    build = erofs_build["build"]
    assert build["changed"] is True
    result_json = read_json(os.path.join(str(erofs_build["target"]), "kiwi.result.json"))
    assert build["result"] == result_json
    assert build["image"] == result_json["filesystem_image"]["filename"]
    assert build["disk"] is None and build["uki"] is None and build["veritytab"] is None
    for name, entry in result_json.items():
        assert build["artifacts"][name] == entry["filename"]
        assert os.path.exists(entry["filename"]), entry["filename"]
    # The image really is an erofs filesystem holding what config.sh wrote.
    blkid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", build["image"]],
                           capture_output=True, text=True, check=False)
    assert blkid.stdout.strip() == "erofs"
    dump = subprocess.run(["dump.erofs", "--path=/etc/attestable-test-mark", "--cat", build["image"]],
                          capture_output=True, text=True, check=False)
    if dump.returncode == 0:  # erofs-utils >= 1.6 can print a file; 1.5 (bookworm) cannot
        assert "built by kiwi_build integration test" in dump.stdout
    names = {package["name"] for package in build["packages"]}
    assert {"busybox", "usrmerge"} <= names
    with open(result_json["image_packages"]["filename"]) as handle:
        assert len(build["packages"]) == len([line for line in handle if line.strip()])
    assert build["kiwi_version"] == subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "kiwi-ng"), "--version"],
        capture_output=True, text=True, check=True).stdout.split()[-1]
    assert build["description_digest"].startswith("sha256:") and len(build["description_digest"]) == 71


def test_erofs_build_log_was_followed_while_it_ran(erofs_build):
    progress = erofs_build["results"]["Report the log lines seen while the build ran"][-1]["msg"]
    assert progress, "the async build was never seen running"
    assert any("|" in line for line in progress), progress  # KIWI log lines: "[ LEVEL ]: time | message"
    with open(erofs_build["log_file"]) as handle:
        log = handle.read()
    assert "Creating erofs" in log or "erofs" in log
    assert erofs_build["build"]["log_file"] == erofs_build["log_file"]


def test_erofs_second_run_is_unchanged_and_check_mode_agrees(erofs_build, module_workdir):
    image = erofs_build["build"]["image"]
    mtime = os.stat(image).st_mtime_ns
    proc, results = run_build(module_workdir, erofs_build["description"], erofs_build["target"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = final_build(results)
    assert again["changed"] is False
    assert "already holds" in again["reason"]
    assert again["image"] == image and again["description_digest"] == erofs_build["build"]["description_digest"]
    assert os.stat(image).st_mtime_ns == mtime
    proc, results = run_build(module_workdir, erofs_build["description"], erofs_build["target"], check=True)
    assert final_build(results)["changed"] is False


def test_erofs_changed_description_would_rebuild(erofs_build, module_workdir):
    """Check mode only (no second build): one changed overlay file changes the digest and the answer."""
    changed = str(module_workdir / "debian-erofs-changed")
    subprocess.run(["cp", "-a", erofs_build["description"], changed], check=True)
    with open(os.path.join(changed, "root", "etc", "hostname"), "w") as handle:
        handle.write("another-name\n")
    proc, results = run_build(module_workdir, changed, erofs_build["target"], check=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    planned = final_build(results)
    assert planned["changed"] is True
    assert "description_digest" in planned["reason"]
    assert planned["description_digest"] != erofs_build["build"]["description_digest"]


def _readonly_partition(disk):
    """(offset, size) in bytes of the disk's erofs partition, from the partition table and blkid."""
    table = json.loads(subprocess.run(["sfdisk", "-J", disk], capture_output=True, text=True, check=True).stdout)
    sector = table["partitiontable"].get("sectorsize", 512)
    for part in table["partitiontable"]["partitions"]:
        offset = part["start"] * sector
        kind = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", "-O", str(offset), disk],
                              capture_output=True, text=True, check=False).stdout.strip()
        if kind == "erofs":
            return offset, part["size"] * sector
    raise AssertionError("no erofs partition in %s: %s" % (disk, table))


def test_oem_verity_root_hash_verifies_the_readonly_partition(oem_build, module_workdir):
    build = oem_build["build"]
    assert build["changed"] is True
    result_json = read_json(os.path.join(str(oem_build["target"]), "kiwi.result.json"))
    assert build["disk"] == result_json["disk_image"]["filename"] and os.path.exists(build["disk"])
    assert build["result"] == result_json
    verity = build["veritytab"]
    assert verity["source"] == "log" and len(verity["root_hash"]) == 64 and build["root_hash"] == verity["root_hash"]
    offset, size = _readonly_partition(build["disk"])
    assert verity["hash_offset"] < size
    partition = str(module_workdir / "readonly.img")
    subprocess.run(["dd", "if=" + build["disk"], "of=" + partition, "bs=1M", "iflag=skip_bytes,count_bytes",
                    "skip=%d" % offset, "count=%d" % size, "status=none"], check=True)
    try:
        verify = subprocess.run(["veritysetup", "verify", partition, partition, verity["root_hash"],
                                 "--hash-offset=%d" % verity["hash_offset"]], capture_output=True, text=True, check=False)
        assert verify.returncode == 0, verify.stderr
        wrong = ("0" if verity["root_hash"][0] != "0" else "1") + verity["root_hash"][1:]
        refused = subprocess.run(["veritysetup", "verify", partition, partition, wrong,
                                  "--hash-offset=%d" % verity["hash_offset"]], capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        # A flipped byte in the erofs data is caught too.
        with open(partition, "r+b") as handle:
            handle.seek(4096 * 3)
            byte = handle.read(1)
            handle.seek(4096 * 3)
            handle.write(bytes([byte[0] ^ 0xFF]))
        tampered = subprocess.run(["veritysetup", "verify", partition, partition, verity["root_hash"],
                                   "--hash-offset=%d" % verity["hash_offset"]], capture_output=True, text=True, check=False)
        assert tampered.returncode != 0
    finally:
        os.remove(partition)


def test_oem_editbootinstall_hook_contract(oem_build):
    """What the AL2023 hook assumes of KIWI (it cannot run here: no vfat), checked on this build's hook record."""
    disk = oem_build["build"]["disk"]
    with open(os.path.splitext(disk)[0] + ".hook") as handle:
        record = handle.read().splitlines()
    assert "disk=%s" % disk in record
    assert any(line.startswith("cwd=") and line.endswith("/build/image-root") for line in record), record
    partitions = [line.split() for line in record if line.startswith("partition=")]
    assert len(partitions) >= 2, record
    assert any(len(fields) > 1 and fields[1] == "erofs" for fields in partitions), record


def test_oem_second_run_is_unchanged(oem_build, module_workdir):
    proc, results = run_build(module_workdir, oem_build["description"], oem_build["target"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    again = final_build(results)
    assert again["changed"] is False
    assert again["root_hash"] == oem_build["build"]["root_hash"]
    assert again["disk"] == oem_build["build"]["disk"]


def test_failed_build_reports_kiwi_errors_and_log(module_workdir):
    description = render_debian_description("debian-erofs", str(module_workdir / "debian-broken"))
    path = os.path.join(description, "appliance.kiwi")
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text.replace('<package name="usrmerge"/>', '<package name="no-such-package-attestable"/>'))
    target = module_workdir / "broken-image"
    proc, results = run_build(module_workdir, description, target)
    assert proc.returncode != 0
    failed = final_build(results)
    assert failed.get("failed") is True
    assert failed["log_file"] in failed["msg"]
    assert "no-such-package-attestable" in " ".join(failed["error_lines"]) + failed["msg"]
    assert not os.path.exists(os.path.join(str(target), ".attestable-kiwi-build.json"))


@pytest.fixture
def nobody_dir():
    """A directory the user nobody can write (pytest's tmp_path lies under a root-only directory)."""
    path = tempfile.mkdtemp(prefix="attestable-nobody-")
    os.chmod(path, 0o777)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_not_root_is_refused_with_a_clear_message(nobody_dir):
    """The module runs as an unprivileged user (nobody) through the system Python; nothing is built or written."""
    shared = nobody_dir
    playbook = shared / "playbook.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Build the image\n      attestable.ami.kiwi_build:\n"
        "        description: %s\n        target_dir: %s\n"
        % (os.path.join(HERE, "descriptions", "debian-erofs"), shared / "target"))
    env = dict(os.environ, HOME=str(shared), ANSIBLE_LOCAL_TEMP=str(shared / "tmp"),
               ANSIBLE_REMOTE_TEMP=str(shared / "tmp"), ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook),
                           "-e", "ansible_python_interpreter=/usr/bin/python3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "must run as root" in proc.stdout and "become: true" in proc.stdout, proc.stdout[-2000:]
    assert not (shared / "target").exists()
