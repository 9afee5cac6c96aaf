"""Overlay ownership reaches the image (issue 11 §2.2): the role renders users, groups and owned overlay entries, and
the real `kiwi-ng system prepare` (Debian flavour, this machine's mirror) builds the image root from it: KIWI copies
root/ as root:root and creates the users, then config.sh's chown/chmod steps leave the owners and modes asked for -
including a set-gid bit that chown would have cleared. The prepared root is what KIWI packs into the erofs root
(mkfs.erofs keeps owners and modes), so reading it back is reading the image's files. Slow: a package install."""
import os
import shutil
import subprocess
import sys

import pytest

import playbook_runner

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "kiwi"))

from kiwi_testlib import debian_mirror  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="kiwi-ng system prepare needs root")]

ROLE_PLAYBOOK = """
- name: Render a description
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_description
"""


def _ids(root, table):
    """name -> id from the image's own /etc/passwd or /etc/group."""
    ids = {}
    with open(os.path.join(root, "etc", table)) as handle:
        for line in handle:
            fields = line.split(":")
            ids[fields[0]] = int(fields[2])
    return ids


def test_owners_and_modes_reach_the_prepared_image_root(tmp_path):
    kiwi = os.path.join(os.path.dirname(sys.executable), "kiwi-ng")
    if not os.path.exists(kiwi):
        kiwi = shutil.which("kiwi-ng")
    if not kiwi:
        pytest.skip("kiwi-ng is not installed")
    tree = tmp_path / "src" / "svc"
    (tree / "conf").mkdir(parents=True)
    (tree / "conf" / "svc.conf").write_text("secret=not-really\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "svc").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(str(tree / "bin" / "svc"), 0o755)
    single = tmp_path / "src" / "report"
    single.write_text("#!/bin/sh\nid\n")
    dest = tmp_path / "description"
    proc, _results, _data = playbook_runner.run(ROLE_PLAYBOOK, tmp_path, extra_vars={
        "image_description_dest": str(dest), "image_description_distribution": "debian",
        "image_description_debian_mirror": debian_mirror(),
        "image_description_groups": [{"name": "svcgrp", "gid": 2101}, {"name": "auditors", "gid": 2102}],
        "image_description_users": [{"name": "svc", "id": 2101, "groups": ["svcgrp"]}],
        "image_description_overlay_files": [
            {"src": str(tree), "dest": "/opt/svc", "owner": "svc", "group": "svcgrp", "mode": "0640",
             "directory_mode": "0750"},
            {"src": str(single), "dest": "/usr/local/bin/report", "group": "auditors", "mode": "2755"},
        ]})
    assert proc.returncode == 0, proc.stdout[-4000:]
    root = tmp_path / "image-root"
    prepare = subprocess.run([kiwi, "system", "prepare",
                              "--description", str(dest), "--root", str(root)],
                             capture_output=True, text=True, check=False,
                             env=dict(os.environ, TMPDIR="/tmp"))  # the chroot has no test TMPDIR
    try:
        assert prepare.returncode == 0, prepare.stdout[-6000:] + prepare.stderr[-2000:]
        users, groups = _ids(str(root), "passwd"), _ids(str(root), "group")
        assert users["svc"] == 2101 and groups["svcgrp"] == 2101 and groups["auditors"] == 2102
        for rel, owner, group, mode in (("opt/svc", "svc", "svcgrp", 0o750),
                                        ("opt/svc/conf", "svc", "svcgrp", 0o750),
                                        ("opt/svc/conf/svc.conf", "svc", "svcgrp", 0o640),
                                        ("opt/svc/bin/svc", "svc", "svcgrp", 0o640),
                                        ("usr/local/bin/report", "root", "auditors", 0o2755)):
            info = os.lstat(os.path.join(str(root), rel))
            assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (users[owner], groups[group], mode), rel
        with open(os.path.join(str(root), "etc", "shadow")) as handle:
            shadow = dict(line.split(":")[:2] for line in handle)
        assert shadow["svc"] == "!"  # locked
        with open(os.path.join(str(root), "etc", "passwd")) as handle:
            assert [line for line in handle if line.startswith("svc:")][0].rstrip().endswith(":/usr/sbin/nologin")
    finally:
        subprocess.run(["umount", "-R", str(root)], capture_output=True, check=False)
        shutil.rmtree(str(root), ignore_errors=True)
