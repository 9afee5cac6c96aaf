# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot a disk image under qemu with UEFI firmware and a swtpm TPM 2.0; replay what the firmware measured.

Plain Python (3.9+), no Ansible imports.

    boot(disk, firmware_code, firmware_vars, arch="x86_64", timeout=300, banks=("sha384", "sha256"),
         until="firmware", console_expect=None)

runs ``swtpm_setup`` (a fresh TPM with sha256 and sha384 banks), ``swtpm socket`` logging every TPM command at
level 20, and qemu (TCG software emulation) with the firmware, the TPM and the disk (opened with
``snapshot=on``: the image is never written). It watches swtpm's log and the serial console and stops the
guest -- without its cooperation -- at ExitBootServices (``until="firmware"``: the measurements are final, see
:func:`_exit_boot_services_index`) or once the OS printed ``console_expect`` or failed (``until="userspace"``),
then replays the log up to ExitBootServices (:mod:`swtpm_log`). Every process it started is killed and its
temporary directory removed on every path out (success, guest failure, timeout, exception).
"""

import hashlib
import os
import re
import shutil
import tempfile
import time

from ansible_collections.attestable.ami.plugins.module_utils._boot import console as boot_console, swtpm_log
from ansible_collections.attestable.ami.plugins.module_utils._common import architectures, atomic_file, processes

ARCHITECTURES = {
    "x86_64": {
        "qemu": "qemu-system-x86_64",
        "code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "vars": "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "loader": architectures.boot_file("x86_64"),
        "packages": "qemu-system-x86 ovmf swtpm swtpm-tools",
    },
    "aarch64": {
        "qemu": "qemu-system-aarch64",
        "code": "/usr/share/AAVMF/AAVMF_CODE.fd",
        "vars": "/usr/share/AAVMF/AAVMF_VARS.fd",
        "loader": architectures.boot_file("aarch64"),
        "packages": "qemu-system-arm qemu-efi-aarch64 swtpm swtpm-tools",
    },
}

# EV_EFI_ACTION that firmware extends into PCR5 when the OS loader calls ExitBootServices().
EXIT_BOOT_SERVICES = b"Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_PCR = 5
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
UNTIL = ("firmware", "userspace")
# seconds a panic gets to finish printing (the kernel halts or, with panic=N, resets after it)
FAILURE_GRACE = 5


class BootError(Exception):
    """The boot could not be run or did not reach its end; ``outcome`` holds what was measured until then."""

    def __init__(self, message, outcome=None):
        super(BootError, self).__init__(message)
        self.outcome = outcome


class BootOutcome(object):
    """What one boot measured: ``replay`` (swtpm_log.Replay, up to ExitBootServices), how and when it ended.

    ``stop_reason``: exit_boot_services, console_expect (the OS printed the expected line), boot_failed (a
    kernel panic or dm-verity corruption on the console), guest_exited or timeout. ``boot_failed``: None, or
    verity, panic, timeout, exited. ``boot_seconds``: from starting qemu to that end.
    """

    def __init__(self, replay, stop_reason, duration, console, qemu_returncode, **details):
        self.replay = replay
        self.stop_reason = stop_reason
        self.duration = duration
        self.console = console
        self.qemu_returncode = qemu_returncode
        self.until = details.get("until", "firmware")
        self.boot_seconds = details.get("boot_seconds", duration)
        self.exit_boot_services = details.get("exit_boot_services", stop_reason == "exit_boot_services")
        self.reached_userspace = details.get("reached_userspace", False)
        self.boot_failed = details.get("boot_failed")
        self.console_tail = details.get("console_tail", [])
        self.qemu_output = details.get("qemu_output", "")


def _exit_boot_services_index(commands):
    """Index of the TPM command that measured "Exit Boot Services Invocation" into PCR5, or None.

    Why this is the moment to stop: UEFI firmware measures boot applications (PCR4) when they are loaded
    with LoadImage() and the Secure Boot policy and authorities (PCR7) before and while it verifies them;
    all of that stops at ExitBootServices(), after which boot services (and so the firmware's TCG2
    protocol) are gone. The systemd stub 252 measures its own items (PCR11 sections, PCR12 for a command
    line or credentials passed from outside, PCR13 sysexts) and loads the embedded kernel (PCR4, standard
    boot) before it jumps to the kernel, and the kernel's EFI stub calls ExitBootServices() only after
    that (seen in swtpm's log: PCR11 x8, PCR4 kernel, PCR9 initrd (Linux EFI stub), then this PCR5
    event). So once this extend is logged, PCR4, PCR7 and PCR12 hold their final pre-OS values; what the
    OS extends later (e.g. IMA's PCR10) is not part of the reference measurements.
    """
    wanted = dict((bank, hashlib.new(bank, EXIT_BOOT_SERVICES).digest()) for bank in ("sha256", "sha384"))
    for command in commands:
        if command.code != swtpm_log.TPM_CC_PCR_EXTEND or command.response_code != 0:
            continue
        try:
            pcr, digests = swtpm_log.decode_extend(command.data)
        except swtpm_log.SwtpmLogError:
            continue
        if pcr == EXIT_BOOT_SERVICES_PCR and any(digests.get(b) == d for b, d in wanted.items()):
            return command.index
    return None


def require_tools(arch):
    """BootError naming the Debian packages when qemu, swtpm or swtpm_setup is missing."""
    for program in (ARCHITECTURES[arch]["qemu"], "swtpm", "swtpm_setup"):
        if shutil.which(program) is None:
            raise BootError("%s is not installed; for arch %s install the Debian packages: %s"
                            % (program, arch, ARCHITECTURES[arch]["packages"]))


def qemu_command(arch, code, vars_copy, disk, tpm_socket, console):
    # TCG only: KVM with -cpu max aborts on some hosts (seen here: "failed to set MSR 0x10a"), and the
    # measurements do not depend on the accelerator.
    accel = ["-accel", "tcg"]
    common = [
        "-m", "1024",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=%s" % code,
        "-drive", "if=pflash,format=raw,unit=1,file=%s" % vars_copy,
        "-chardev", "socket,id=chrtpm,path=%s" % tpm_socket,
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-drive", "file=%s,format=raw,if=none,id=disk0,snapshot=on" % disk,
        "-nic", "none", "-display", "none", "-monitor", "none", "-no-reboot",
        "-serial", "file:%s" % console,
    ]
    if arch == "x86_64":
        # NVMe, as EC2 Nitro instances present EBS volumes, and because cloud kernels (Debian's
        # linux-image-cloud-amd64) have no AHCI driver for q35's IDE/SATA bus: booting to userspace needs a
        # disk the kernel sees. The firmware's PCR4/7/12 measurements do not depend on the disk's bus.
        return (["qemu-system-x86_64", "-machine", "q35,smm=off", "-cpu", "max"] + accel + common
                + ["-device", "tpm-tis,tpmdev=tpm0",
                   "-device", "nvme,drive=disk0,serial=attestable-boot,bootindex=0"])
    return (["qemu-system-aarch64", "-machine", "virt", "-cpu", "max"] + accel + common
            + ["-device", "tpm-tis-device,tpmdev=tpm0", "-device", "virtio-blk-pci,drive=disk0,bootindex=0"])


def _start(argv, log_path):
    """Start argv in its own process group, stdout and stderr appended to log_path (processes.Child)."""
    try:
        return processes.start(argv, stdout=log_path, stderr=processes.STDOUT, term_grace=5, kill_grace=10)
    except processes.ProcessNotStarted as exc:
        raise BootError(str(exc))


def _stop(child):
    """Terminate a process we started and its whole group (SIGTERM, then SIGKILL if it lingers)."""
    if child is not None:
        child.stop()


def _read(path):
    try:
        with open(path, "r", errors="replace") as handle:
            return handle.read()
    except (IOError, OSError):
        return ""


def _tail(path, size=4096):
    """The end of a log, without the terminal escape sequences the firmware's console writes."""
    return processes.tail_text(path, size, clean=boot_console.clean)


def work_parent(tmpdir=None):
    """Where the boot's private work directory goes: tmpdir (or TMPDIR), unless swtpm's socket under it would not
    fit in a unix socket address (AWX and pytest job directories are deep); then /tmp."""
    base = tmpdir or tempfile.gettempdir()
    if len(os.path.join(base, "attestable-boot-xxxxxxxx", "tpm.sock")) <= _SOCKET_PATH_MAX:
        return tmpdir
    return "/tmp"


def _start_swtpm(work):
    """Set up a fresh TPM (sha256 + sha384 banks) and start swtpm logging every command; (process, socket, log)."""
    tpm_socket = os.path.join(work, "tpm.sock")
    if len(tpm_socket) > _SOCKET_PATH_MAX:
        raise BootError("temporary directory path too long for a unix socket (%s); set TMPDIR to a "
                        "shorter directory" % work)
    state = os.path.join(work, "tpm")
    os.mkdir(state)
    tpm_log = os.path.join(work, "swtpm.log")
    try:
        setup = processes.run(["swtpm_setup", "--tpm2", "--tpmstate", state, "--pcr-banks", "sha256,sha384"],
                              stderr=processes.STDOUT, timeout=120)
    except processes.ProcessError as exc:
        raise BootError("swtpm_setup: %s" % exc)
    if setup.returncode != 0:
        raise BootError("swtpm_setup failed (rc=%d): %s"
                        % (setup.returncode, setup.stdout.decode("utf-8", "replace").strip()))
    swtpm = _start(["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state,
                    "--ctrl", "type=unixio,path=%s" % tpm_socket, "--terminate",
                    "--log", "file=%s,level=20" % tpm_log], os.path.join(work, "swtpm.out"))
    deadline = time.time() + 15
    while not os.path.exists(tpm_socket):
        if swtpm.poll() is not None or time.time() > deadline:
            _stop(swtpm)
            raise BootError("swtpm did not start: %s" % _tail(os.path.join(work, "swtpm.out")))
        time.sleep(0.05)
    return swtpm, tpm_socket, tpm_log


class _Watch(object):
    """The state of one running boot, updated by each poll: TPM log, console, what decided the end."""

    def __init__(self, tpm_log, console, until, expect):
        self.tpm_log = tpm_log
        self.until = until
        self.expect = expect
        self.reader = boot_console.ConsoleReader(console)
        self.log_size = -1
        self.ebs_index = None
        self.reached = False
        self.failure = None
        self.failure_at = None
        self.panic_ended = False

    def poll_tpm(self):
        """Look for ExitBootServices in swtpm's log (only until found: after it, the log no longer matters)."""
        if self.ebs_index is not None:
            return
        size = os.path.getsize(self.tpm_log) if os.path.exists(self.tpm_log) else 0
        if size != self.log_size:  # parse again only when swtpm logged more
            self.log_size = size
            commands, _controls = swtpm_log.parse(_read(self.tpm_log))
            self.ebs_index = _exit_boot_services_index(commands)

    def poll_console(self, final=False):
        text = self.reader.read(final=final)
        if not text:
            return
        seen = boot_console.failure(text)
        if seen and self.failure != "verity":
            self.failure = seen
            self.failure_at = self.failure_at or time.time()
        if boot_console.PANIC_END.search(text):
            self.panic_ended = True
        if self.failure is None and self.expect is not None and self.expect.search(text):
            self.reached = True


def boot(disk, firmware_code, firmware_vars, arch="x86_64", timeout=300, banks=("sha384", "sha256"),
         poll_interval=0.2, tmpdir=None, until="firmware", console_expect=None):
    """Boot ``disk`` (raw image) with a copy of ``firmware_vars``; return a BootOutcome.

    ``until="firmware"`` stops the guest at ExitBootServices; ``until="userspace"`` lets the OS boot on and stops
    it when its serial console matches ``console_expect`` (a regex), shows a kernel panic or dm-verity
    corruption, powers off, or ``timeout`` seconds have passed. Either way the measurements are those up to
    ExitBootServices. How the boot ended is in the outcome (``stop_reason``, ``boot_failed``); BootError is
    raised only when the boot could not be run (a tool missing or failing).
    """
    if arch not in ARCHITECTURES:
        raise BootError("arch %r is not supported (expected one of %s)" % (arch, ", ".join(sorted(ARCHITECTURES))))
    if until not in UNTIL:
        raise BootError("until %r is not supported (expected one of %s)" % (until, ", ".join(UNTIL)))
    require_tools(arch)
    expect = re.compile(console_expect or boot_console.DEFAULT_EXPECT, re.MULTILINE) if until == "userspace" else None
    work = tempfile.mkdtemp(prefix="attestable-boot-", dir=work_parent(tmpdir))
    swtpm = qemu = None
    try:
        vars_copy = os.path.join(work, "vars.fd")
        atomic_file.copy_file(firmware_vars, vars_copy)
        console = os.path.join(work, "console.log")
        swtpm, tpm_socket, tpm_log = _start_swtpm(work)
        started = time.time()
        qemu = _start(qemu_command(arch, firmware_code, vars_copy, disk, tpm_socket, console),
                      os.path.join(work, "qemu.out"))
        watch = _Watch(tpm_log, console, until, expect)
        stop_reason = None
        while stop_reason is None:
            returncode = qemu.poll()
            watch.poll_tpm()
            if until == "userspace":
                watch.poll_console(final=returncode is not None)
            now = time.time()
            if until == "firmware" and watch.ebs_index is not None:
                stop_reason = "exit_boot_services"
            elif watch.reached:
                stop_reason = "console_expect"
            elif watch.failure and (watch.panic_ended or returncode is not None
                                    or now - watch.failure_at > FAILURE_GRACE):
                stop_reason = "boot_failed"
            elif returncode is not None:
                stop_reason = "guest_exited"
            elif now - started > timeout:
                stop_reason = "timeout"
            else:
                time.sleep(poll_interval)
        boot_seconds = round(time.time() - started, 1)
        _stop(qemu)
        duration = round(time.time() - started, 1)
        _stop(swtpm)
        watch.poll_console(final=True)
        commands, controls = swtpm_log.parse(_read(tpm_log))
        # swtpm may have logged the guest's last commands after the loop's last look
        ebs_index = _exit_boot_services_index(commands)
        if stop_reason == "guest_exited" and until == "firmware" and ebs_index is not None:
            stop_reason = "exit_boot_services"
        if ebs_index is not None:
            commands = [c for c in commands if c.index <= ebs_index]
        replay = swtpm_log.Replay(banks).apply(commands, controls)
        return BootOutcome(replay, stop_reason, duration, _tail(console), qemu.returncode,
                           until=until, boot_seconds=boot_seconds, exit_boot_services=ebs_index is not None,
                           reached_userspace=stop_reason == "console_expect", boot_failed=_boot_failed(stop_reason, watch),
                           console_tail=watch.reader.tail(),
                           qemu_output=_tail(os.path.join(work, "qemu.out"), 1024).strip())
    finally:
        _stop(qemu)
        _stop(swtpm)
        shutil.rmtree(work, ignore_errors=True)


def _boot_failed(stop_reason, watch):
    """None for a boot that ended as asked; else verity, panic, timeout or exited (powered off / reset early)."""
    if stop_reason in ("exit_boot_services", "console_expect"):
        return None
    # the console may show why even when the guest only stopped or hung after it
    shown = watch.failure or boot_console.failure("\n".join(watch.reader.lines))
    if shown:
        return shown
    return "timeout" if stop_reason == "timeout" else "exited"
