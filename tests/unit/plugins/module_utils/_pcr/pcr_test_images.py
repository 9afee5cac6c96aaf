# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real EFI images, keys and signature lists for the PCR engine's tests (built with the real tools).

- UKIs are assembled with objcopy onto Debian's systemd-stub 252 (systemd-boot-efi); a small real PE32+
  (systemd-bootx64.efi) stands in for the kernel in `.linux`, which keeps the unit tests fast.
- Keys and certificates come from openssl, signatures from sbsign (sbsigntool), signature lists from
  efitools' cert-to-efi-sig-list.
- The test vector (../shared/vectors/uki-objcopy-252) is found via $ATTESTABLE_VECTORS or beside the checkout.
"""
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
SMALL_PE = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
OWNER = uuid.UUID("11111111-2222-3333-4444-555555555555")

DEBIAN_OSREL = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n'
AL2023_OSREL = 'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023"\n'


def vectors_dir():
    path = os.environ.get("ATTESTABLE_VECTORS") or os.path.join(os.path.dirname(ROOT), "shared", "vectors")
    return path if os.path.isdir(path) else None


def vector(name="uki-objcopy-252"):
    """The vector folder; skips the test (with the reason) when it is absent."""
    base = vectors_dir()
    if base is None or not os.path.isdir(os.path.join(base, name)):
        pytest.skip("test vector %s not found (set ATTESTABLE_VECTORS or place ../shared/vectors beside the "
                    "checkout)" % name)
    return os.path.join(base, name)


def vector_measured(name="uki-objcopy-252"):
    with open(os.path.join(vector(name), "measured.json")) as handle:
        return json.load(handle)


def vector_events(name="uki-objcopy-252"):
    """The firmware's events from eventlog.yaml (tpm2_eventlog output): [{pcr, type, digests{bank: hex}}].

    Read with a small pattern parser, so the Python 3.9 unit run needs no YAML library.
    """
    with open(os.path.join(vector(name), "eventlog.yaml")) as handle:
        text = handle.read()
    events = []
    for block in re.split(r"\n- EventNum: ", text)[1:]:
        pcr = int(re.search(r"\n  PCRIndex: (\d+)", block).group(1))
        event_type = re.search(r"\n  EventType: (\S+)", block).group(1)
        digests = dict(re.findall(r"- AlgorithmId: (\w+)\n    Digest: \"([0-9a-f]+)\"", block))
        events.append({"pcr": pcr, "type": event_type, "digests": digests})
    return events


def need(*tools):
    for tool in tools:
        if not shutil.which(tool):
            pytest.skip("%s is not installed (Debian packages in requirements/apt/)" % tool)


def need_file(path):
    if not os.path.isfile(path):
        pytest.skip("%s not found (Debian package systemd-boot-efi)" % path)


def run(*argv):
    subprocess.run(list(argv), check=True, capture_output=True)


def build_uki(directory, name="uki.efi", kernel=SMALL_PE, osrel=DEBIAN_OSREL, cmdline="console=ttyS0 quiet",
              sdmagic=None, remove_sdmagic=False, stub=STUB, initrd=None):
    """A UKI made with objcopy --add-section onto the real systemd stub; returns its path.

    sdmagic: replace the stub's .sdmagic text (e.g. to pretend another stub version); remove_sdmagic drops it.
    """
    need("objcopy")
    need_file(stub)
    need_file(kernel)
    directory = str(directory)
    parts = {}
    for section, content in ((".osrel", osrel), (".cmdline", cmdline)):
        path = os.path.join(directory, "%s.%s" % (name, section.lstrip(".")))
        with open(path, "w") as handle:
            handle.write(content)
        parts[section] = path
    out = os.path.join(directory, name)
    argv = ["objcopy",
            "--add-section", ".osrel=%s" % parts[".osrel"], "--change-section-vma", ".osrel=0x20000",
            "--add-section", ".cmdline=%s" % parts[".cmdline"], "--change-section-vma", ".cmdline=0x30000",
            "--add-section", ".linux=%s" % kernel, "--change-section-vma", ".linux=0x2000000"]
    if initrd is not None:
        argv += ["--add-section", ".initrd=%s" % initrd, "--change-section-vma", ".initrd=0x3000000"]
    if remove_sdmagic:
        argv += ["--remove-section", ".sdmagic"]
    elif sdmagic is not None:
        magic = os.path.join(directory, "%s.sdmagic" % name)
        with open(magic, "wb") as handle:
            handle.write(sdmagic.encode() + b"\0")
        argv += ["--update-section", ".sdmagic=%s" % magic]
    run(*(argv + [stub, out]))
    return out


class Signer(object):
    """A self-signed code-signing key pair (openssl), and what the firmware's db would hold for it."""

    def __init__(self, directory, common_name):
        need("openssl", "sbsign", "cert-to-efi-sig-list")
        directory = str(directory)
        self.key = os.path.join(directory, "%s.key" % common_name)
        self.cert = os.path.join(directory, "%s.crt" % common_name)
        self.der_path = os.path.join(directory, "%s.der" % common_name)
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=%s" % common_name, "-keyout", self.key, "-out", self.cert)
        run("openssl", "x509", "-in", self.cert, "-outform", "DER", "-out", self.der_path)
        with open(self.der_path, "rb") as handle:
            self.der = handle.read()
        self.directory = directory
        self.common_name = common_name

    def sign(self, image, out=None):
        out = out or image[:-4] + ".signed.efi"
        run("sbsign", "--key", self.key, "--cert", self.cert, "--output", out, image)
        return out

    def esl(self, owner=OWNER, name=None):
        """cert-to-efi-sig-list's EFI_SIGNATURE_LIST for this certificate; returns the file path."""
        out = os.path.join(self.directory, name or "%s.esl" % self.common_name)
        run("cert-to-efi-sig-list", "-g", str(owner), self.cert, out)
        return out


def write(path, data):
    with open(str(path), "wb") as handle:
        handle.write(data)
    return str(path)
