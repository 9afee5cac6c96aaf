# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""processes: real child processes (sh, sleep); a timeout, a stop or an exception takes the whole group."""
import os
import signal
import sys
import time

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._common import processes

# A shell that puts a grandchild (sleep) in the background, records its pid, says so on stderr and waits.
FAMILY = 'sleep 300 & echo $! > "$1"; echo "started $!" >&2; wait'


def running(pid):
    """Whether pid is a live process (a zombie waiting for its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (IOError, OSError):
        return False


def gone_soon(pid, seconds=15):
    """True once pid is no longer running (the init process reaps an orphan a moment after its kill)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not running(pid):
            return True
        time.sleep(0.05)
    return False


def read_pid(path, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path):
            text = open(path).read().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise AssertionError("the child never wrote %s" % path)


def test_run_captures_output_and_exit_code():
    done = processes.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done.returncode == 3
    assert done.stdout == b"out\n" and done.stderr == b"err\n"
    assert done.tail() == "err"
    text = processes.run(["sh", "-c", "cat; echo more"], input="given\n", text=True)
    assert text.returncode == 0 and text.stdout == "given\nmore\n"


def test_non_zero_exit_with_check_names_the_program_the_code_and_the_end_of_stderr():
    script = "i=0; while [ $i -lt 3000 ]; do echo line$i >&2; i=$((i+1)); done; echo last words >&2; exit 7"
    with pytest.raises(processes.ProcessFailed) as info:
        processes.run(["sh", "-c", script], check=True)
    assert info.value.returncode == 7
    assert "sh failed (exit 7)" in str(info.value)
    assert info.value.tail.endswith("last words")
    assert len(info.value.tail) == processes.TAIL, "the tail is limited, the beginning of stderr is dropped"
    assert "line0\n" not in info.value.tail


def test_a_program_that_is_not_there_is_reported_not_raised_as_oserror(tmp_path):
    missing = str(tmp_path / "no-such-tool")
    with pytest.raises(processes.ProcessNotStarted) as info:
        processes.run([missing, "--help"])
    assert missing in str(info.value) and info.value.os_error is not None
    with pytest.raises(processes.ProcessNotStarted):
        processes.start([missing])


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = str(tmp_path / "grandchild.pid")
    started = time.time()
    with pytest.raises(processes.ProcessTimeout) as info:
        processes.run(["sh", "-c", FAMILY, "sh", pidfile], timeout=2)
    grandchild = read_pid(pidfile)
    assert gone_soon(grandchild), "the background sleep of the timed-out shell must be killed too"
    assert info.value.timeout == 2
    assert "did not finish within 2 seconds" in str(info.value)
    assert "started %d" % grandchild in info.value.tail, "what the program wrote before the kill is kept"
    assert time.time() - started < 120  # not the 300 s the sleep asked for, with room for a busy machine


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    pidfile = str(tmp_path / "pid")
    script = "trap '' TERM; echo $$ > \"$1\"; while :; do sleep 1; done"
    child = processes.start(["sh", "-c", script, "sh", pidfile], term_grace=0.5, kill_grace=10)
    read_pid(pidfile)
    returncode = child.stop()
    assert returncode == -signal.SIGKILL
    assert child.poll() == -signal.SIGKILL


def test_an_exception_inside_the_with_block_stops_the_child_and_its_children(tmp_path):
    pidfile = str(tmp_path / "grandchild.pid")
    log = str(tmp_path / "child.log")
    with pytest.raises(RuntimeError, match="provoked"):
        with processes.start(["sh", "-c", FAMILY, "sh", pidfile], stdout=log) as child:
            grandchild = read_pid(pidfile)
            assert child.poll() is None and running(grandchild)
            raise RuntimeError("provoked")
    assert child.returncode is not None
    assert gone_soon(grandchild)
    assert "started %d" % grandchild in open(log).read(), "stderr went to the same log as stdout"


def test_an_exception_while_run_waits_kills_the_group(tmp_path):
    """What Ctrl-C does to a waiting run(): here a SIGALRM handler raises while communicate() waits."""
    pidfile = str(tmp_path / "grandchild.pid")

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.5)
        with pytest.raises(KeyboardInterrupt):
            processes.run(["sh", "-c", FAMILY, "sh", pidfile], timeout=300)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert gone_soon(read_pid(pidfile))


def test_wait_past_its_timeout_stops_the_child_and_reports_the_end_of_its_log(tmp_path):
    log = str(tmp_path / "build.log")
    script = "import sys, time\nfor i in range(40): print('step %d' % i)\nsys.stdout.flush()\ntime.sleep(300)"
    child = processes.start([sys.executable, "-c", script], stdout=log, append=False, term_grace=1)
    with pytest.raises(processes.ProcessTimeout) as info:
        child.wait(timeout=3)
    assert child.poll() is not None
    assert info.value.tail.splitlines() == ["step %d" % i for i in range(25, 40)]


def test_start_appends_or_truncates_and_separates_stderr(tmp_path):
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    out.write_text("before\n")
    err.write_text("old\n")
    with processes.start(["sh", "-c", "echo o; echo e >&2"], stdout=str(out), stderr=str(err), append=True) as child:
        assert child.wait(60) == 0
    assert out.read_text() == "before\no\n" and err.read_text() == "old\ne\n"
    with processes.start(["sh", "-c", "echo o2; echo e2 >&2"], stdout=str(out), stderr=str(err),
                         append=False) as child:
        assert child.wait(60) == 0
    assert out.read_text() == "o2\n" and err.read_text() == "e2\n"


def test_tail_lines_reads_only_the_last_non_empty_lines(tmp_path):
    log = tmp_path / "big.log"
    with open(str(log), "w") as handle:
        handle.write("early\n" * 200000)  # 1.2 MB that a tail must not need
        for i in range(30):
            handle.write("line %d\n\n" % i)
    assert processes.tail_lines(str(log), 4) == ["line 26", "line 27", "line 28", "line 29"]
    assert processes.tail_lines(str(log), 0) == []
    assert "early" not in processes.tail_lines(str(log), 30, window=200)
    assert processes.tail_lines(str(tmp_path / "missing.log")) == []


def test_tail_text_limits_characters_after_cleaning(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"boot\x1b[2J\x1b[01;01H" * 5000 + b"end \xff of log")
    text = processes.tail_text(str(log), 40, clean=lambda t: t.replace("\x1b[2J", "").replace("\x1b[01;01H", ""))
    assert len(text) == 40 and text.endswith("end \ufffd of log") and "\x1b" not in text
    assert processes.tail_text(str(log), 0) == ""
    assert processes.tail_text(str(tmp_path / "missing.log")) == ""
