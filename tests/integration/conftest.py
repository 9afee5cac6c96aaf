# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared fixtures for the integration tests: run real playbooks, start a real moto server over HTTP.

Helpers for one area live in that area's own conftest or test module; keep this file small.
"""
import os
import socket
import urllib.request

import pytest

import playbook_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def vectors_dir():
    """../shared/vectors beside the checkout (or $ATTESTABLE_VECTORS); None when absent."""
    path = os.environ.get("ATTESTABLE_VECTORS") or os.path.join(os.path.dirname(ROOT), "shared", "vectors")
    return path if os.path.isdir(path) else None


class PlaybookResult(object):
    def __init__(self, proc, results):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        # task name -> the last localhost result of a task with that name
        self.results = dict((name, host_results[-1]) for name, host_results in results.items())

    def task(self, name):
        """The result of the (last) task with this name on localhost."""
        if name not in self.results:
            raise KeyError("no task named %r ran; tasks: %s" % (name, ", ".join(self.results)))
        return self.results[name]


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook (YAML text or a path) with ansible-playbook against localhost; returns PlaybookResult.

    Uses the json stdout callback so every task's result can be asserted on by name.
    """

    def _run(playbook, extra_vars=None, check=False, diff=False, env=None, args=()):
        proc, results, _data = playbook_runner.run(playbook, tmp_path, extra_vars=extra_vars, check=check,
                                                   diff=diff, env=env, args=args)
        return PlaybookResult(proc, results)

    return _run


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def moto_server():
    """A real moto server on 127.0.0.1 (HTTP), with a state reset for each test. Yields its endpoint URL.

    Clients reach it with endpoint_url (or AWS_ENDPOINT_URL) and the dummy credentials set here.
    Its request recorder (POST /moto-api/recorder/start-recording, GET .../download-recording) lets a test
    check what a module *sent* where moto drops fields (see moto_recording).
    """
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = "http://127.0.0.1:%d" % port
    # ThreadedMotoServer keeps moto's state in this process: reset it so no test sees another's resources.
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"), timeout=30).close()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield url
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def debian_uefi_build(tmp_path_factory):
    """The role's Debian flavour built once per session by kiwi_build (tests/integration/debian_uefi_build.py)."""
    if os.geteuid() != 0:
        pytest.skip("kiwi-ng system build needs root")
    pytest.importorskip("kiwi")
    import debian_uefi_build as builder

    if not builder.vfat_available():
        pytest.skip("no vfat driver and no /sbin/mount.vfat: run scripts/bootstrap.sh")
    return builder.build(tmp_path_factory.mktemp("debian-uefi"))
