"""Boot a disk image under qemu with UEFI firmware and a swtpm TPM 2.0; replay what the firmware measured.

Plain Python (3.9+), no Ansible imports.

    boot(disk, firmware_code, firmware_vars, arch="x86_64", timeout=300, banks=("sha384", "sha256"))

runs ``swtpm_setup`` (a fresh TPM with sha256 and sha384 banks), ``swtpm socket`` logging every TPM command at
level 20, and qemu (TCG software emulation) with the firmware, the TPM and the disk (opened with
``snapshot=on``: the image is never written). It watches swtpm's log and stops the guest -- without its
cooperation -- once the measurements are final (see :func:`_exit_boot_services_index`), then replays the log
(:mod:`swtpm_log`). Every process it started is killed and its temporary directory removed on every path out
(success, guest failure, timeout, exception).
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from ansible_collections.attestable.ami.plugins.module_utils import swtpm_log

ARCHITECTURES = {
    "x86_64": {
        "qemu": "qemu-system-x86_64",
        "code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "vars": "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "loader": "EFI/BOOT/BOOTX64.EFI",
        "packages": "qemu-system-x86 ovmf swtpm swtpm-tools",
    },
    "aarch64": {
        "qemu": "qemu-system-aarch64",
        "code": "/usr/share/AAVMF/AAVMF_CODE.fd",
        "vars": "/usr/share/AAVMF/AAVMF_VARS.fd",
        "loader": "EFI/BOOT/BOOTAA64.EFI",
        "packages": "qemu-system-arm qemu-efi-aarch64 swtpm swtpm-tools",
    },
}

# EV_EFI_ACTION that firmware extends into PCR5 when the OS loader calls ExitBootServices().
EXIT_BOOT_SERVICES = b"Exit Boot Services Invocation"
EXIT_BOOT_SERVICES_PCR = 5
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


class BootError(Exception):
    """The boot could not be run or did not reach its end; ``outcome`` holds what was measured until then."""

    def __init__(self, message, outcome=None):
        super(BootError, self).__init__(message)
        self.outcome = outcome


class BootOutcome(object):
    """What one boot measured: ``replay`` (swtpm_log.Replay), why it stopped, how long it took."""

    def __init__(self, replay, stop_reason, duration, console, qemu_returncode):
        self.replay = replay
        self.stop_reason = stop_reason
        self.duration = duration
        self.console = console
        self.qemu_returncode = qemu_returncode


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
        return (["qemu-system-x86_64", "-machine", "q35,smm=off", "-cpu", "max"] + accel + common
                + ["-device", "tpm-tis,tpmdev=tpm0", "-device", "ide-hd,drive=disk0,bus=ide.0,bootindex=0"])
    return (["qemu-system-aarch64", "-machine", "virt", "-cpu", "max"] + accel + common
            + ["-device", "tpm-tis-device,tpmdev=tpm0", "-device", "virtio-blk-pci,drive=disk0,bootindex=0"])


def _start(argv, log_path):
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def _stop(proc):
    """Terminate a process we started (its own session/group), then kill it if it lingers."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    # children of the group (none expected) go with the group's SIGKILL
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _read(path):
    try:
        with open(path, "r", errors="replace") as handle:
            return handle.read()
    except (IOError, OSError):
        return ""


def _tail(path, size=4096):
    """The end of a log, without the terminal escape sequences the firmware's console writes."""
    return _TERMINAL_ESCAPES.sub("", _read(path))[-size:]


def boot(disk, firmware_code, firmware_vars, arch="x86_64", timeout=300, banks=("sha384", "sha256"),
         poll_interval=0.2, tmpdir=None):
    """Boot ``disk`` (raw image) with a copy of ``firmware_vars``; return a BootOutcome.

    Raises BootError when a tool is missing or fails, and when the boot ends (timeout, guest exit) before
    the measurements are final; its ``outcome`` then holds the partial replay.
    """
    if arch not in ARCHITECTURES:
        raise BootError("arch %r is not supported (expected one of %s)" % (arch, ", ".join(sorted(ARCHITECTURES))))
    require_tools(arch)
    work = tempfile.mkdtemp(prefix="attestable-boot-", dir=tmpdir)
    swtpm = qemu = None
    try:
        tpm_socket = os.path.join(work, "tpm.sock")
        if len(tpm_socket) > _SOCKET_PATH_MAX:
            raise BootError("temporary directory path too long for a unix socket (%s); set TMPDIR to a "
                            "shorter directory" % work)
        state = os.path.join(work, "tpm")
        os.mkdir(state)
        vars_copy = os.path.join(work, "vars.fd")
        shutil.copyfile(firmware_vars, vars_copy)
        tpm_log = os.path.join(work, "swtpm.log")
        console = os.path.join(work, "console.log")
        setup = subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", state, "--pcr-banks", "sha256,sha384"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=120, check=False)
        if setup.returncode != 0:
            raise BootError("swtpm_setup failed (rc=%d): %s"
                            % (setup.returncode, setup.stdout.decode("utf-8", "replace").strip()))
        swtpm = _start(["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state,
                        "--ctrl", "type=unixio,path=%s" % tpm_socket, "--terminate",
                        "--log", "file=%s,level=20" % tpm_log], os.path.join(work, "swtpm.out"))
        deadline = time.time() + 15
        while not os.path.exists(tpm_socket):
            if swtpm.poll() is not None or time.time() > deadline:
                raise BootError("swtpm did not start: %s" % _tail(os.path.join(work, "swtpm.out")))
            time.sleep(0.05)

        started = time.time()
        qemu = _start(qemu_command(arch, firmware_code, vars_copy, disk, tpm_socket, console),
                      os.path.join(work, "qemu.out"))
        stop_reason = None
        stop_index = None
        log_size = -1
        while stop_reason is None:
            returncode = qemu.poll()
            size = os.path.getsize(tpm_log) if os.path.exists(tpm_log) else 0
            if size != log_size:  # parse again only when swtpm logged more
                log_size = size
                commands, _controls = swtpm_log.parse(_read(tpm_log))
                stop_index = _exit_boot_services_index(commands)
            if stop_index is not None:
                stop_reason = "exit_boot_services"
            elif returncode is not None:
                stop_reason = "guest_exited"
            elif time.time() - started > timeout:
                stop_reason = "timeout"
            else:
                time.sleep(poll_interval)
        duration = time.time() - started
        _stop(qemu)
        _stop(swtpm)
        commands, controls = swtpm_log.parse(_read(tpm_log))
        if stop_reason == "guest_exited":
            # swtpm may have logged the guest's last commands after qemu was seen gone
            stop_index = _exit_boot_services_index(commands)
            if stop_index is not None:
                stop_reason = "exit_boot_services"
        if stop_index is not None:
            commands = [c for c in commands if c.index <= stop_index]
        replay = swtpm_log.Replay(banks).apply(commands, controls)
        outcome = BootOutcome(replay, stop_reason, round(duration, 1), _tail(console), qemu.returncode)
        if stop_reason == "guest_exited":
            raise BootError("the guest stopped (qemu rc=%s) before any OS loader called ExitBootServices, so the "
                            "measurements are not final; qemu said: %s; console: %s"
                            % (qemu.returncode, _tail(os.path.join(work, "qemu.out"), 1024).strip(),
                               outcome.console[-1024:].strip()), outcome)
        if stop_reason == "timeout":
            raise BootError("no OS loader called ExitBootServices within %s s (the firmware did not hand over to "
                            "an OS: no bootable %s, or, with Secure Boot, an image not signed by a db key); "
                            "console: %s" % (timeout, ARCHITECTURES[arch]["loader"], outcome.console[-1024:].strip()),
                            outcome)
        return outcome
    finally:
        _stop(qemu)
        _stop(swtpm)
        shutil.rmtree(work, ignore_errors=True)
