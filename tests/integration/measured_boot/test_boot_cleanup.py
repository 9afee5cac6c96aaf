# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu_boot.boot cleans up after an exception raised while the guest runs (real swtpm and qemu, no playbook).

The exception is provoked by making the log parser fail on its third call, i.e. after qemu has started:
the only way to fail at that point on purpose. Everything else is real.
"""
import os

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import qemu as qemu_boot, swtpm_log
from measured_boot_helpers import processes_mentioning

pytestmark = pytest.mark.slow


def test_an_exception_mid_boot_kills_qemu_and_swtpm_and_removes_the_temporary_directory(
        uki, short_tmpdir, monkeypatch):
    real_parse = swtpm_log.parse
    calls = []
    seen_running = []

    def failing_parse(text):
        calls.append(1)
        if len(calls) == 3:
            seen_running.extend(processes_mentioning(short_tmpdir))
            raise RuntimeError("provoked failure")
        return real_parse(text)

    monkeypatch.setattr(swtpm_log, "parse", failing_parse)
    with pytest.raises(RuntimeError, match="provoked failure"):
        qemu_boot.boot(uki, "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd",
                       timeout=60, tmpdir=short_tmpdir)
    assert any("qemu-system-x86_64" in line for line in seen_running), seen_running
    assert any(line.startswith("swtpm") for line in seen_running)
    assert processes_mentioning(short_tmpdir) == []
    assert os.listdir(short_tmpdir) == []
