# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the measured_boot tests (a uniquely named module: every test folder has a conftest)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD_UKI = os.path.join(ROOT, "scripts", "build-uki.sh")
MEASURE_UKI_PLAYBOOK = os.path.join(ROOT, "playbooks", "measure_uki.yml")
# attestation.md: PCR7 of a standard boot (empty Secure Boot variables) on OVMF and NitroTPM alike.
STANDARD_BOOT_PCR7 = ("98441c7f7625d10058c47683aec486ce311c633235eb555593a7ee791121e3578a"
                      "e72d04ecef661f272d59058b77af35")


def build_uki(output, *args):
    """Run scripts/build-uki.sh [args] OUTPUT; returns OUTPUT."""
    subprocess.run([BUILD_UKI] + list(args) + [output], check=True, capture_output=True, text=True)
    return output


def processes_mentioning(marker):
    """Full command lines (ps -ww: never cut to the terminal width) of running processes that mention marker."""
    out = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if marker in line and not line.startswith("ps ")]


# Guest /init scripts for boots to userspace (busybox from the host's busybox-static, as build-uki.sh uses).
INIT_PROLOGUE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
"""


def pcr_extend_command(pcr, data):
    """A TPM2_PCR_Extend command (password session) extending SHA-256 and SHA-384 of data into pcr."""
    import hashlib
    import struct
    auth = struct.pack(">IHBH", 0x40000009, 0, 0, 0)  # TPM_RS_PW, empty nonce, no attributes, empty hmac
    digests = struct.pack(">I", 2)
    for alg, name in ((0x000B, "sha256"), (0x000C, "sha384")):
        digests += struct.pack(">H", alg) + hashlib.new(name, data).digest()
    body = struct.pack(">II", pcr, len(auth)) + auth + digests
    return struct.pack(">HII", 0x8002, 10 + len(body), 0x182) + body


def uki_with_init(base_uki, init_script, output, files=None):
    """base_uki (from build-uki.sh) with its .initrd replaced: busybox, init_script as /init, files {path: bytes}
    (paths relative to the initrd's root, parent directories created).

    The kernel, stub, .cmdline (console=ttyS0 panic=-1 quiet) and the section layout stay (.initrd is the last
    section, so it may grow).
    """
    import shutil
    import tempfile
    work = tempfile.mkdtemp(prefix="uki-init-")
    try:
        tree = os.path.join(work, "tree")
        for directory in ("bin", "proc", "sys", "dev"):
            os.makedirs(os.path.join(tree, directory))
        shutil.copy("/bin/busybox", os.path.join(tree, "bin", "busybox"))
        with open(os.path.join(tree, "init"), "w") as handle:
            handle.write(init_script)
        os.chmod(os.path.join(tree, "init"), 0o755)
        for name, data in (files or {}).items():
            path = os.path.join(tree, name)
            if not os.path.isdir(os.path.dirname(path)):
                os.makedirs(os.path.dirname(path))
            with open(path, "wb") as handle:
                handle.write(data)
            os.chmod(path, 0o755)
        cpio = os.path.join(work, "initrd.cpio")
        names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, text=True,
                               check=True).stdout
        with open(cpio, "wb") as handle:
            subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=tree, input=names.encode(),
                           stdout=handle, check=True)
        # remove and add again at the same address: --update-section would keep the old VirtualSize, and the
        # stub hands the kernel only that many bytes
        vma = subprocess.run(["objdump", "-h", base_uki], capture_output=True, text=True, check=True).stdout
        vma = [line.split()[3] for line in vma.splitlines() if line.split()[1:2] == [".initrd"]][0]
        stripped = os.path.join(work, "stripped.efi")
        subprocess.run(["objcopy", "--remove-section", ".initrd", base_uki, stripped], check=True, capture_output=True)
        subprocess.run(["objcopy", "--add-section", ".initrd=%s" % cpio, "--change-section-vma",
                        ".initrd=0x%s" % vma, stripped, output], check=True, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output
