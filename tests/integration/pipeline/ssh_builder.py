# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A builder reached over real SSH: sshd on 127.0.0.1 (a free port, generated host and client keys), logged in
as root, become through sudo, with a Python 3.9 virtualenv holding KIWI as the builder's interpreter.

sshd runs in its own mount namespace in which the controller's virtualenv is hidden (an empty tmpfs over it),
as on a real builder, which has never seen the controller's interpreter path: anything that would run a
builder-side module with the controller's interpreter fails there.
"""
import os
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILDER_VENV = os.path.join(ROOT, ".cache", "builder-py39")


class SkipBuilder(Exception):
    """The machine lacks something the SSH builder needs (said in the message)."""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python39():
    candidates = [os.environ.get("PYTHON39", "")]
    pyenv = os.path.expanduser("~/.pyenv/versions")
    if os.path.isdir(pyenv):
        candidates += [os.path.join(pyenv, v, "bin", "python3") for v in sorted(os.listdir(pyenv)) if v.startswith("3.9")]
    candidates.append("/usr/bin/python3.9")
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def builder_python():
    """The builder's interpreter: a Python 3.9 virtualenv (AL2023's Python) with the controller's KIWI version."""
    python = os.path.join(BUILDER_VENV, "bin", "python")
    import kiwi.version
    want = kiwi.version.__version__
    probe = [python, "-c", "import kiwi.version; print(kiwi.version.__version__)"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip() == want:
        return python
    base = python39()
    if base is None:
        raise SkipBuilder("no Python 3.9 on this machine for the builder's interpreter (set PYTHON39)")
    shutil.rmtree(BUILDER_VENV, ignore_errors=True)
    subprocess.run([base, "-m", "venv", BUILDER_VENV], check=True)
    subprocess.run([os.path.join(BUILDER_VENV, "bin", "pip"), "install", "-q", "kiwi==%s" % want], check=True)
    return python


class SSHBuilder(object):
    def __init__(self, workdir):
        for tool in ("/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/sudo", "/usr/bin/unshare"):
            if not os.path.exists(tool):
                raise SkipBuilder("%s is missing (requirements/apt/ssh-builder-test.txt)" % tool)
        self.workdir = str(workdir)
        self.port = _free_port()
        self.key = os.path.join(self.workdir, "client_ed25519")
        self.host_key = os.path.join(self.workdir, "host_ed25519")
        self.python = builder_python()
        self.process = None

    def start(self):
        for path in (self.key, self.host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        authorized = os.path.join(self.workdir, "authorized_keys")
        shutil.copy(self.key + ".pub", authorized)
        os.chmod(authorized, 0o600)
        config = os.path.join(self.workdir, "sshd_config")
        with open(config, "w") as handle:
            handle.write("\n".join([
                "Port %d" % self.port, "ListenAddress 127.0.0.1", "HostKey %s" % self.host_key,
                "AuthorizedKeysFile %s" % authorized, "PermitRootLogin prohibit-password",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
                "PidFile none", "Subsystem sftp internal-sftp", ""]))
        os.makedirs("/run/sshd", exist_ok=True)
        hidden = os.path.realpath(os.path.dirname(os.path.dirname(sys.executable)))
        script = 'mount -t tmpfs -o size=1m attestable-hidden "$1" && exec /usr/sbin/sshd -D -e -f "$2"'
        self.log = open(os.path.join(self.workdir, "sshd.log"), "w")
        self.process = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                         hidden, config], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            probe = subprocess.run(["ssh"] + self.ssh_args() + ["root@127.0.0.1", "true"], capture_output=True, check=False)
            if probe.returncode == 0:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.3)
        self.stop()
        with open(os.path.join(self.workdir, "sshd.log")) as handle:
            raise RuntimeError("sshd on 127.0.0.1:%d did not accept the key: %s" % (self.port, handle.read()[-2000:]))

    def ssh_args(self):
        return ["-p", str(self.port), "-i", self.key, "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def host_vars(self):
        """Inventory variables that reach this builder (ansible_* connection variables)."""
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": self.key,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": self.python,
            "ansible_become_method": "sudo",
        }

    def run(self, command):
        """Run a shell command on the builder (inside its mount namespace)."""
        return subprocess.run(["ssh"] + self.ssh_args() + ["root@127.0.0.1", command], capture_output=True, text=True,
                              check=False)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if hasattr(self, "log"):
            self.log.close()
