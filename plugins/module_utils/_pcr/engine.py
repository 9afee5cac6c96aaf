# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reference NitroTPM measurements (PCR4, PCR7, PCR12) of a boot chain, as nitro-tpm-pcr-compute predicts them.

Plain Python (3.9+), no Ansible imports; ``cryptography`` is imported only for Secure Boot.

    compute(images, pk=None, kek=None, db=None, dbx=None, banks=("sha384",))

returns ``measurements`` in the tool's format (``{"HashAlgorithm": "SHA384", "PCR4": hex, "PCR7": hex,
"PCR12": hex}``), ``banks`` (the same per hash bank), ``events`` (every extend, in order, with what was hashed)
and ``images`` (per image: SHA-256 of the file, Authenticode digests, UKI details).

PCR4: EV_EFI_ACTION "Calling EFI Application from Boot Option", EV_SEPARATOR, then each image's Authenticode
digest in load order, plus a UKI's embedded kernel unless its systemd-stub is >= 258 (or >= 252 with Secure
Boot). PCR7: SecureBoot, PK, KEK, db, dbx, EV_SEPARATOR, then (Secure Boot) each db certificate that
authorised an image, once. PCR12: nothing is extended (48 zero bytes in the SHA-384 bank).
Secure Boot is on exactly when ``pk`` is given, as with the tool's ``--PK``.
"""

import hashlib
import os
import struct
import threading

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as meas
from ansible_collections.attestable.ami.plugins.module_utils._pcr import efi_siglist
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import (
    SUPPORTED_BANKS,
    ImageError,
    PeImage,
)
from ansible_collections.attestable.ami.plugins.module_utils._pcr.uki import analyse as analyse_uki

EV_SEPARATOR = "EV_SEPARATOR"
EV_EFI_ACTION = "EV_EFI_ACTION"
EV_EFI_BOOT_SERVICES_APPLICATION = "EV_EFI_BOOT_SERVICES_APPLICATION"
EV_EFI_VARIABLE_DRIVER_CONFIG = "EV_EFI_VARIABLE_DRIVER_CONFIG"
EV_EFI_VARIABLE_AUTHORITY = "EV_EFI_VARIABLE_AUTHORITY"

CALLING_EFI_APPLICATION = b"Calling EFI Application from Boot Option"
SEPARATOR_DATA = b"\0\0\0\0"
REPORTED_PCRS = tuple(meas.pcr_index(key) for key in meas.REFERENCE_PCRS)  # (4, 7, 12)

# (variable name, vendor GUID, option name) in the order the firmware measures them into PCR7.
SECURE_BOOT_VARIABLES = (
    ("PK", efi_siglist.EFI_GLOBAL_VARIABLE_GUID, "pk"),
    ("KEK", efi_siglist.EFI_GLOBAL_VARIABLE_GUID, "kek"),
    ("db", efi_siglist.EFI_IMAGE_SECURITY_DATABASE_GUID, "db"),
    ("dbx", efi_siglist.EFI_IMAGE_SECURITY_DATABASE_GUID, "dbx"),
)


class PcrError(ValueError):
    """An input cannot be measured; the message names the file and the problem."""


def extend(bank, pcr_value, digest):
    """The PCR value after extending ``pcr_value`` (bytes) with ``digest`` (bytes) in hash ``bank``."""
    return hashlib.new(bank, bytes(pcr_value) + bytes(digest)).digest()


def variable_event_data(name, vendor_guid, data):
    """UEFI_VARIABLE_DATA as measured: GUID (LE) | u64 name length (chars) | u64 data length | UTF-16LE name | data."""
    encoded = name.encode("utf-16-le")
    return vendor_guid.bytes_le + struct.pack("<QQ", len(name), len(data)) + encoded + bytes(data)


def _read(path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        raise PcrError("%s %s: cannot read it: %s" % (what, path, exc.strerror or exc))


class _Log(object):
    """Collects events and extends the PCRs of every bank as it goes."""

    def __init__(self, banks):
        self.banks = tuple(banks)
        self.pcrs = dict((bank, {}) for bank in self.banks)
        self.events = []

    def add(self, pcr, event_type, digests, description):
        for bank in self.banks:
            current = self.pcrs[bank].get(pcr, b"\0" * hashlib.new(bank).digest_size)
            self.pcrs[bank][pcr] = extend(bank, current, digests[bank])
        self.events.append({
            "pcr": pcr,
            "type": event_type,
            "digests": dict((bank, digests[bank].hex()) for bank in self.banks),
            "description": description,
        })

    def add_data(self, pcr, event_type, data, description):
        self.add(pcr, event_type, dict((bank, hashlib.new(bank, data).digest()) for bank in self.banks), description)

    def value(self, bank, pcr):
        return self.pcrs[bank].get(pcr, b"\0" * hashlib.new(bank).digest_size)


class MeasuredImage(object):
    """One boot image: its bytes (read once), parsed, its digests computed. ``path`` names it in messages."""

    def __init__(self, path, data, banks=("sha384",)):
        self.path = path
        try:
            self.pe = PeImage(data, name=path)
            self.uki = analyse_uki(self.pe)
        except ImageError as exc:
            raise PcrError("image %s: %s" % (path, exc))
        # The file's plain SHA-256 (reported, not measured) runs on a second core: hashlib releases the GIL.
        file_hash = hashlib.sha256()
        worker = threading.Thread(target=file_hash.update, args=(data,))
        worker.start()
        try:
            self.authenticode = self.pe.authenticode_digests(banks)
            self.kernel_authenticode = self.uki.kernel.authenticode_digests(banks) if self.uki else None
        finally:
            worker.join()
        self.sha256 = file_hash.hexdigest()

    def summary(self):
        uki = None
        if self.uki is not None:
            uki = self.uki.details()
            uki["kernel_authenticode"] = dict((b, d.hex()) for b, d in self.kernel_authenticode.items())
        return {
            "path": self.path,
            "sha256": self.sha256,
            "architecture": self.pe.architecture,
            "signed": bool(self.pe.cert_table_size),
            "authenticode": dict((b, d.hex()) for b, d in self.authenticode.items()),
            "uki": uki,
        }


def _check_banks(banks):
    banks = tuple(banks)
    if not banks:
        raise PcrError("banks: at least one hash bank is needed (sha384)")
    unknown = [b for b in banks if b not in SUPPORTED_BANKS]
    if unknown:
        raise PcrError("banks: unsupported hash bank(s) %s; expected some of %s"
                       % (", ".join(map(str, unknown)), ", ".join(SUPPORTED_BANKS)))
    if "sha384" not in banks:
        banks = ("sha384",) + banks  # the reported measurements are SHA-384
    return tuple(sorted(set(banks), key=banks.index))


def _read_signature_databases(paths):
    """{option: (raw bytes, [entries])} for the ESL files given (missing option = empty variable)."""
    databases = {}
    for option, path in paths.items():
        if path is None:
            databases[option] = (b"", [])
            continue
        data = _read(path, "%s signature list" % option)
        try:
            databases[option] = (data, efi_siglist.parse(data))
        except efi_siglist.SignatureListError as exc:
            raise PcrError("%s signature list %s: not a valid EFI_SIGNATURE_LIST file: %s" % (option, path, exc))
    return databases


def _signing_certificates(image):
    """DER certificates of the image's Authenticode signature(s), in the order the PKCS#7 lists them."""
    try:
        blobs = image.pe.certificates()
    except ImageError as exc:
        raise PcrError("image %s: %s" % (image.path, exc))
    if not blobs:
        return []
    try:
        from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
    except ImportError:
        raise PcrError("image %s: reading its Authenticode signature for Secure Boot needs the Python library "
                       "cryptography (>= 41), which is not installed" % image.path)

    certificates = []
    for blob in blobs:
        try:
            loaded = pkcs7.load_der_pkcs7_certificates(blob)
        except ValueError as exc:
            raise PcrError("image %s: its Authenticode signature is not a readable PKCS#7 SignedData: %s"
                           % (image.path, exc))
        certificates.extend(cert.public_bytes(Encoding.DER) for cert in loaded)
    return certificates


def _measure_pcr4(log, images, secure_boot):
    log.add_data(4, EV_EFI_ACTION, CALLING_EFI_APPLICATION,
                 "the string '%s' (the firmware starts a boot option)" % CALLING_EFI_APPLICATION.decode())
    log.add_data(4, EV_SEPARATOR, SEPARATOR_DATA, "separator: 4 zero bytes (end of pre-boot measurements)")
    for image in images:
        log.add(4, EV_EFI_BOOT_SERVICES_APPLICATION, image.authenticode,
                "Authenticode digest of %s (%d bytes, sha256 %s)" % (image.path, len(image.pe.data), image.sha256))
        if image.uki is None:
            continue
        if image.uki.measures_kernel(secure_boot):
            log.add(4, EV_EFI_BOOT_SERVICES_APPLICATION, image.kernel_authenticode,
                    "Authenticode digest of the kernel in the .linux section of %s (%d bytes): systemd-stub %s "
                    "(from %s) loads it through the firmware%s"
                    % (image.path, len(image.uki.kernel_data), image.uki.stub_version, image.uki.stub_version_source,
                       "" if not secure_boot else " under Secure Boot"))


def _measure_pcr7(log, images, databases, paths, secure_boot):
    log.add_data(7, EV_EFI_VARIABLE_DRIVER_CONFIG,
                 variable_event_data("SecureBoot", efi_siglist.EFI_GLOBAL_VARIABLE_GUID,
                                     b"\x01" if secure_boot else b"\x00"),
                 "variable SecureBoot = %s" % ("01 (enabled: PK given)" if secure_boot else "00 (disabled: no PK)"))
    for name, guid, option in SECURE_BOOT_VARIABLES:
        data, entries = databases[option]
        what = ("empty (not set)" if paths[option] is None
                else "%d bytes from %s (%d entries)" % (len(data), paths[option], len(entries)))
        log.add_data(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable_event_data(name, guid, data),
                     "variable %s: %s" % (name, what))
    log.add_data(7, EV_SEPARATOR, SEPARATOR_DATA, "separator: 4 zero bytes")
    if not secure_boot:
        return
    db_certificates = [e for e in databases["db"][1] if e.is_x509]
    measured = set()
    for image in images:
        authority = None
        for der in _signing_certificates(image):
            authority = next((e for e in db_certificates if e.data == der), None)
            if authority is not None:
                break
        if authority is None:
            if not image.pe.cert_table_size:
                problem = "the image is unsigned"
            elif paths["db"] is None:
                problem = "no db was given"
            else:
                problem = "none of its signing certificates is an X.509 entry of db %s" % paths["db"]
            raise PcrError("image %s: under Secure Boot the firmware boots only images signed by a certificate in "
                           "db, and measures that certificate into PCR7, but %s" % (image.path, problem))
        key = (authority.owner, authority.data)
        if key in measured:
            continue
        measured.add(key)
        log.add_data(7, EV_EFI_VARIABLE_AUTHORITY,
                     variable_event_data("db", efi_siglist.EFI_IMAGE_SECURITY_DATABASE_GUID,
                                         authority.owner.bytes_le + authority.data),
                     "db certificate that authorised %s (owner %s, %d bytes DER)"
                     % (image.path, authority.owner, len(authority.data)))


def boot_mode(pk=None, kek=None, db=None):
    """"secure_boot" when a PK is given (Secure Boot is enforced exactly when a PK is enrolled), else "standard".
    KEK/db without a PK are measured into PCR7 but enforce nothing."""
    return meas.boot_mode_for(pk)


def compute(images, pk=None, kek=None, db=None, dbx=None, banks=("sha384",)):
    """Reference measurements of booting ``images`` (paths, load order); see the module docstring."""
    banks = _check_banks(banks)
    if isinstance(images, (str, bytes)) or not images:
        raise PcrError("images: a non-empty list of image paths (in load order) is needed")
    paths = {"pk": pk, "kek": kek, "db": db, "dbx": dbx}
    secure_boot = pk is not None
    for option, path in paths.items():
        if path is not None and not os.path.isfile(path):
            raise PcrError("%s signature list %s: no such file" % (option, path))
    for path in images:
        if not os.path.isfile(path):
            raise PcrError("image %s: no such file" % path)
    databases = _read_signature_databases(paths)
    loaded = [MeasuredImage(path, _read(path, "image"), banks) for path in images]

    log = _Log(banks)
    _measure_pcr4(log, loaded, secure_boot)
    _measure_pcr7(log, loaded, databases, paths, secure_boot)

    per_bank = dict((bank, dict(("PCR%d" % pcr, log.value(bank, pcr).hex()) for pcr in REPORTED_PCRS))
                    for bank in banks)
    measurements = {meas.HASH_ALGORITHM_KEY: meas.HASH_ALGORITHM}
    measurements.update(per_bank["sha384"])
    return {
        "measurements": measurements,
        "banks": per_bank,
        "events": log.events,
        "images": [image.summary() for image in loaded],
        "secure_boot": secure_boot,
    }
