# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the collection's external programs, and stop them again, one way. Plain Python 3.9+, no Ansible imports.

    run(argv, timeout=None, input=None, env=None, check=False)
        Run to the end with stdout and stderr captured; returns a Completed. A timeout stops the program's whole
        process group (SIGTERM, then SIGKILL) and raises ProcessTimeout; a program that cannot be started raises
        ProcessNotStarted; with check=True a non-zero exit raises ProcessFailed (exit code and stderr's tail).
    start(argv, stdout=None, stderr=STDOUT, append=True, env=None, term_grace=5, kill_grace=10)
        A long-running child (qemu, swtpm, kiwi-ng) in its own session, so its own process group; its output goes
        to files. Child.stop() kills the whole group (children it started included); using the Child as a context
        manager stops it on every way out of the block, exceptions (and Ctrl-C) included.
    tail_text(path, size) / tail_lines(path, count)
        The end of a log, reading only its last bytes.

Every child gets its own process group (start_new_session), so stopping it never signals this process and
always reaches whatever it forked. The errors are ProcessError subclasses carrying argv, the exit code and
the tail of what the program wrote, for the caller to turn into its own error message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal
import subprocess
import time

STDOUT = subprocess.STDOUT
TAIL = 2000  # characters of a program's output an error message keeps
_WINDOW = 64 * 1024  # bytes a tail reads from the end of a log
_DRAIN = 5  # seconds to collect the output of a killed program (a grandchild outside the group may hold the pipe)


class ProcessError(Exception):
    """A program could not run, ran too long or failed; ``argv``, ``returncode`` and ``tail`` say how."""

    def __init__(self, message, argv=None, returncode=None, tail=""):
        super(ProcessError, self).__init__(message)
        self.argv = list(argv or [])
        self.returncode = returncode
        self.tail = tail


class ProcessNotStarted(ProcessError):
    """The program could not be started (not installed, not executable); ``os_error`` is why."""

    def __init__(self, message, argv=None, os_error=None):
        super(ProcessNotStarted, self).__init__(message, argv)
        self.os_error = os_error


class ProcessTimeout(ProcessError):
    """The program did not finish in ``timeout`` seconds; its process group was killed."""

    def __init__(self, message, argv=None, timeout=None, tail=""):
        super(ProcessTimeout, self).__init__(message, argv, None, tail)
        self.timeout = timeout


class ProcessFailed(ProcessError):
    """The program exited with a non-zero code (``run(..., check=True)``)."""


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def output_tail(data, size=TAIL):
    """The last ``size`` characters of a program's output (bytes or text), stripped."""
    return _text(data).strip()[-size:]


class Completed(object):
    """A finished run: ``argv``, ``returncode``, ``stdout`` and ``stderr`` (bytes, or text with text=True)."""

    def __init__(self, argv, returncode, stdout, stderr, duration):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.duration = duration

    def tail(self, size=TAIL):
        """The end of stderr, else of stdout: what to show when the program failed."""
        return output_tail(self.stderr, size) or output_tail(self.stdout, size)


def _name(argv):
    return os.path.basename(str(argv[0])) if argv else "?"


def _signal_group(pid, sig):
    """Send sig to the process group pid leads; False when the group is gone."""
    try:
        os.killpg(pid, sig)
        return True
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        raise


def _stop_group(proc, term_grace, kill_grace):
    """SIGTERM the group, wait term_grace for its leader; SIGKILL the group, wait kill_grace.

    The group gets a SIGKILL at the end even when its leader exited after SIGTERM: what the leader forked into
    its group (and did not reap) must not outlive it.
    """
    if proc.poll() is None:
        for sig, grace in ((signal.SIGTERM, term_grace), (signal.SIGKILL, kill_grace)):
            if grace is None:
                continue
            _signal_group(proc.pid, sig)
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
    _signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(kill_grace)
    except subprocess.TimeoutExpired:
        pass  # a process in uninterruptible sleep: it has SIGKILL pending and goes when the kernel lets it
    return proc.returncode


def _drain(proc):
    """The output a killed program left in its pipes, without waiting on a grandchild that escaped the group."""
    try:
        return proc.communicate(timeout=_DRAIN)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        return None, None


def run(argv, timeout=None, input=None, env=None, cwd=None, check=False, text=False, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, term_grace=2, kill_grace=10):
    """Run argv to its end; returns a Completed (stdout/stderr captured unless redirected).

    ``timeout`` (seconds, None for none): past it the process group is stopped (SIGTERM, ``term_grace`` seconds,
    then SIGKILL) and ProcessTimeout raised, with the tail of what the program wrote. An exception while waiting
    (KeyboardInterrupt included) also kills the group before it propagates. ``input`` (bytes, or str with
    text=True) is written to stdin, otherwise stdin is /dev/null.
    """
    argv = [str(arg) for arg in argv]
    started = time.time()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, env=env, cwd=cwd, close_fds=True,
                                start_new_session=True, universal_newlines=text)
    except OSError as exc:
        raise ProcessNotStarted("cannot run %s: %s" % (argv[0], exc.strerror or exc), argv, exc)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc, term_grace, kill_grace)
        out, err = _drain(proc)
        tail = output_tail(err) or output_tail(out)
        raise ProcessTimeout("%s did not finish within %s seconds and was stopped%s"
                             % (_name(argv), timeout, ": %s" % tail if tail else ""), argv, timeout, tail)
    except BaseException:
        _stop_group(proc, None, kill_grace)
        _drain(proc)
        raise
    completed = Completed(argv, proc.returncode, out, err, time.time() - started)
    if check and proc.returncode != 0:
        tail = completed.tail()
        raise ProcessFailed("%s failed (exit %d)%s" % (_name(argv), proc.returncode, ": %s" % tail if tail else ""),
                            argv, proc.returncode, tail)
    return completed


def _open_output(target, append):
    if target is None:
        return open(os.devnull, "wb")
    return open(target, "ab" if append else "wb")


class Child(object):
    """A program started by :func:`start`, running in its own process group."""

    def __init__(self, argv, proc, log, term_grace, kill_grace):
        self.argv = argv
        self.proc = proc
        self.log = log
        self.term_grace = term_grace
        self.kill_grace = kill_grace
        self.stopped = False

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.returncode

    def poll(self):
        """The exit code, or None while it runs."""
        return self.proc.poll()

    def wait(self, timeout=None):
        """Wait for the exit code. Past ``timeout`` seconds the group is stopped and ProcessTimeout raised, with
        the end of the log in ``tail``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            tail = "\n".join(tail_lines(self.log)) if self.log else ""
            raise ProcessTimeout("%s did not finish within %s seconds and was stopped" % (_name(self.argv), timeout),
                                 self.argv, timeout, tail)

    def stop(self, term_grace=None, kill_grace=None):
        """Stop the whole process group (SIGTERM, grace, SIGKILL); safe to call again; returns the exit code."""
        self.stopped = True
        return _stop_group(self.proc, self.term_grace if term_grace is None else term_grace,
                           self.kill_grace if kill_grace is None else kill_grace)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
        return False


def start(argv, stdout=None, stderr=STDOUT, append=True, env=None, cwd=None, term_grace=5, kill_grace=10):
    """Start argv in its own process group and return a Child (stdin /dev/null).

    ``stdout``: a file path (appended to, or truncated with append=False) or None for /dev/null. ``stderr``:
    STDOUT (the same file), a path, or None. ``term_grace``/``kill_grace``: seconds stop() waits after SIGTERM
    and after SIGKILL. Use ``with start(...) as child:`` so that no way out of the block leaves the group running.
    """
    argv = [str(arg) for arg in argv]
    out = err = None
    try:
        out = _open_output(stdout, append)
        if stderr is STDOUT:
            err_target = subprocess.STDOUT
        else:
            err = _open_output(stderr, append)
            err_target = err
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err_target, env=env, cwd=cwd,
                                close_fds=True, start_new_session=True)
    except OSError as exc:
        raise ProcessNotStarted("cannot run %s: %s" % (argv[0], exc.strerror or exc), argv, exc)
    finally:
        for handle in (out, err):
            if handle is not None:
                handle.close()
    return Child(argv, proc, stdout, term_grace, kill_grace)


def tail_bytes(path, size=_WINDOW):
    """The last ``size`` bytes of a file; b"" when it cannot be read (a log not yet written)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            handle.seek(max(0, end - size))
            return handle.read(size)
    except (IOError, OSError):
        return b""


def tail_text(path, size=4096, clean=None, window=None):
    """The last ``size`` characters of a log, after ``clean`` (a function over text, e.g. removing terminal
    escapes) when given. Reads only the last ``window`` bytes (default: enough for size after cleaning)."""
    text = tail_bytes(path, window or max(_WINDOW, 4 * size)).decode("utf-8", "replace")
    if clean is not None:
        text = clean(text)
    return text[-size:] if size else ""


def tail_lines(path, count=15, window=_WINDOW):
    """The last ``count`` non-empty lines of a log (read from its last ``window`` bytes)."""
    if count <= 0:
        return []
    text = tail_bytes(path, window).decode("utf-8", "replace")
    return [line for line in text.splitlines() if line.strip()][-count:]
