# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu.boot's early ways out: a failing swtpm_setup, a swtpm that never listens. Nothing is left running or on disk.

swtpm_setup, swtpm and qemu are stand-in shell scripts here (first on PATH), because the point is what boot()
does when they misbehave, which the real programs do not do on demand; the real boot is
tests/integration/measured_boot (test_boot_cleanup.py for an exception while qemu runs).
"""
import os
import shutil
import stat
import tempfile
import time

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import qemu as qemu_boot


def stand_ins(directory, swtpm_setup, swtpm):
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for name, body in (("swtpm_setup", swtpm_setup), ("swtpm", swtpm),
                       ("qemu-system-x86_64", "echo qemu must not start >&2; exit 1")):
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(bin_dir)


def running(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (IOError, OSError):
        return False


@pytest.fixture
def boot_dir(tmp_path):
    """A short directory for boot()'s temporary directory (its unix socket path must stay under 108 bytes)."""
    work = tempfile.mkdtemp(prefix="qbt-", dir="/tmp")
    vars_file = tmp_path / "vars.fd"
    vars_file.write_bytes(b"\0" * 4096)
    yield work, str(vars_file)
    shutil.rmtree(work, ignore_errors=True)


def test_a_failing_swtpm_setup_is_a_boot_error_with_its_output(tmp_path, monkeypatch, boot_dir):
    work, vars_file = boot_dir
    monkeypatch.setenv("PATH", stand_ins(tmp_path, "echo 'cannot create TPM state'; exit 3", "exit 1") + ":/usr/bin:/bin")
    with pytest.raises(qemu_boot.BootError, match=r"swtpm_setup failed \(rc=3\): cannot create TPM state"):
        qemu_boot.boot(str(tmp_path / "disk.raw"), vars_file, vars_file, tmpdir=work, timeout=30)
    assert os.listdir(work) == [], "the temporary directory is removed"


def test_a_swtpm_that_never_listens_is_stopped_with_what_it_started(tmp_path, monkeypatch, boot_dir):
    work, vars_file = boot_dir
    pidfile = tmp_path / "grandchild.pid"
    swtpm = 'sleep 300 & echo $! > %s; echo "stand-in swtpm, no socket"; wait' % pidfile
    monkeypatch.setenv("PATH", stand_ins(tmp_path, "exit 0", swtpm) + ":/usr/bin:/bin")
    with pytest.raises(qemu_boot.BootError, match="swtpm did not start: stand-in swtpm, no socket"):
        qemu_boot.boot(str(tmp_path / "disk.raw"), vars_file, vars_file, tmpdir=work, timeout=30)
    grandchild = int(pidfile.read_text())
    deadline = time.time() + 15
    while running(grandchild) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(grandchild), "what swtpm started is killed with it"
    assert os.listdir(work) == []


def test_a_deep_tmpdir_moves_the_work_directory_where_the_tpm_socket_fits(tmp_path):
    deep = str(tmp_path / ("d" * 60) / ("e" * 40))
    assert qemu_boot.work_parent(deep) == "/tmp"
    assert len(os.path.join(qemu_boot.work_parent(deep), "attestable-boot-xxxxxxxx", "tpm.sock")) <= 100
    assert qemu_boot.work_parent("/tmp/short") == "/tmp/short"
    assert qemu_boot.work_parent(None) in (None, "/tmp")
