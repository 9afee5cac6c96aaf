# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the measured_boot tests: UKIs built once per session from real parts, Secure Boot keys.

The UKIs come from scripts/build-uki.sh (Debian cloud kernel from apt, busybox-static initrd, systemd stub 252);
the Secure Boot key is generated here with openssl, its ESL made with efitools' cert-to-efi-sig-list (an
implementation independent of the collection's own), and the private key is deleted as soon as the UKI is signed.
"""
import os
import shutil
import subprocess
import tempfile

import pytest

from measured_boot_helpers import build_uki

OWNER_GUID = "5b1e2d3c-4a59-4c6e-9f7a-8b9c0d1e2f30"


@pytest.fixture(scope="session")
def parts_dir():
    path = tempfile.mkdtemp(prefix="mb-parts-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def uki(parts_dir):
    """A reproducible (unsigned) UKI."""
    return build_uki(os.path.join(parts_dir, "uki.efi"))


@pytest.fixture(scope="session")
def secure_boot(parts_dir):
    """A UKI signed with sbsign by a fresh key, and that key's certificate as PK/KEK/db ESL files.

    Returns dict(uki=signed UKI, cert=PEM certificate, esl=ESL file holding the certificate).
    """
    key_dir = tempfile.mkdtemp(prefix="mb-key-")
    try:
        key = os.path.join(key_dir, "db.key")
        cert = os.path.join(parts_dir, "db.crt")
        subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "3650", "-subj", "/CN=attestable measured_boot test db/"],
                       check=True, capture_output=True)
        signed = build_uki(os.path.join(parts_dir, "uki.signed.efi"), "--sign", key, cert)
    finally:
        shutil.rmtree(key_dir)
    esl = os.path.join(parts_dir, "db.esl")
    subprocess.run(["cert-to-efi-sig-list", "-g", OWNER_GUID, cert, esl], check=True, capture_output=True)
    return {"uki": signed, "cert": cert, "esl": esl}


@pytest.fixture
def short_tmpdir():
    """A short TMPDIR for the module (unix socket paths must stay under 108 bytes); checked empty by tests."""
    path = tempfile.mkdtemp(prefix="mbt-")
    yield path
    shutil.rmtree(path, ignore_errors=True)
