# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PE32+ images: header parsing (via pefile) and the Authenticode digest that UEFI firmware measures.

Plain Python (3.9+), no Ansible imports. The digest follows the `authenticode` Rust crate that AWS's
nitro-tpm-pcr-compute uses, which is also what EDK2's measured boot (HashPeImage) computes:

1. the headers from 0 to SizeOfHeaders, leaving out the OptionalHeader CheckSum (4 bytes) and the
   Certificate Table data-directory entry (8 bytes);
2. each section's raw data (PointerToRawData, SizeOfRawData), ordered by PointerToRawData, empty ones skipped;
3. the bytes from SizeOfHeaders + (sum of the hashed sections' sizes) up to (file length - certificate table size).

Nothing is padded. Every range is checked against the data, so a truncated or inconsistent image is an
``ImageError`` naming the problem, never a silent short hash.
"""

import hashlib
import struct
import traceback

try:
    import pefile
except ImportError:  # reported by the module (missing_required_lib); engine=nitro-tpm-pcr-compute works without
    pefile = None
    PEFILE_IMPORT_ERROR = traceback.format_exc()
else:
    PEFILE_IMPORT_ERROR = None

from ansible_collections.attestable.ami.plugins.module_utils._common import architectures

PE32_MAGIC = 0x10B
PE32_PLUS_MAGIC = 0x20B
# Offsets inside the optional header (the same for PE32 and PE32+ up to the checksum).
_CHECKSUM_OFFSET = 64
_PE32_PLUS_DATA_DIRECTORY_OFFSET = 112
_SECURITY_DIRECTORY_INDEX = 4
# The headers pefile is given: enough for the DOS/NT headers and a section table of any sane size.
_HEADER_PROBE = 64 * 1024

# PE/COFF Machine -> name: the two this collection builds for come from the architecture table; the others are
# only reported (an image for them cannot be booted here).
MACHINES = dict(architectures.PE_MACHINES)
MACHINES.update({0x5064: "riscv64", 0x6264: "loongarch64"})

WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002

SUPPORTED_BANKS = ("sha384", "sha256")


class ImageError(ValueError):
    """The data is not a PE32+ image this code can measure; the message says why."""


class Section(object):
    """One section header, with its raw data range checked against the image."""

    __slots__ = ("name", "virtual_address", "virtual_size", "pointer_to_raw_data", "size_of_raw_data")

    def __init__(self, name, virtual_address, virtual_size, pointer_to_raw_data, size_of_raw_data):
        self.name = name
        self.virtual_address = virtual_address
        self.virtual_size = virtual_size
        self.pointer_to_raw_data = pointer_to_raw_data
        self.size_of_raw_data = size_of_raw_data

    @property
    def content_size(self):
        """The bytes the section really holds: min(VirtualSize, SizeOfRawData) (the rest is file alignment)."""
        return min(self.virtual_size, self.size_of_raw_data)

    def __repr__(self):
        return "Section(%r, raw=0x%x+0x%x, virtual_size=0x%x)" % (
            self.name, self.pointer_to_raw_data, self.size_of_raw_data, self.virtual_size)


class PeImage(object):
    """A parsed PE32+ image over a bytes-like buffer (kept as a memoryview: slicing it copies nothing)."""

    def __init__(self, data, name="image"):
        self.name = name
        self.data = data if isinstance(data, memoryview) else memoryview(data)
        self._parse()

    # -- parsing -------------------------------------------------------------------------------------
    def _parse(self):
        size = len(self.data)
        if size < 64 or bytes(self.data[:2]) != b"MZ":
            raise ImageError("not a PE image (no 'MZ' DOS header at offset 0)")
        e_lfanew = struct.unpack_from("<I", self.data, 0x3C)[0]
        if e_lfanew + 24 > size:
            raise ImageError("truncated: the PE header at 0x%x lies beyond the end of the data (%d bytes)"
                             % (e_lfanew, size))
        if bytes(self.data[e_lfanew:e_lfanew + 4]) != b"PE\0\0":
            raise ImageError("not a PE image (no 'PE' signature at 0x%x)" % e_lfanew)
        opt = e_lfanew + 24
        if opt + 2 > size:
            raise ImageError("truncated inside the PE optional header")
        magic = struct.unpack_from("<H", self.data, opt)[0]
        if magic == PE32_MAGIC:
            raise ImageError("is a 32-bit PE (PE32, optional header magic 0x10b); UEFI measurement here needs "
                             "a PE32+ (64-bit) image")
        if magic != PE32_PLUS_MAGIC:
            raise ImageError("unknown PE optional header magic 0x%x (expected 0x20b, PE32+)" % magic)

        if pefile is None:
            raise ImageError("cannot be parsed: the Python library pefile is not installed (pip install pefile)")
        probe = bytes(self.data[:_HEADER_PROBE])
        try:
            pe = pefile.PE(data=probe, fast_load=True)
        except Exception as exc:  # pefile raises PEFormatError, struct.error, IndexError... on bad headers
            raise ImageError("not a valid PE image: %s" % exc)
        if pe.FILE_HEADER.SizeOfOptionalHeader < _PE32_PLUS_DATA_DIRECTORY_OFFSET:
            raise ImageError("PE optional header too small (%d bytes)" % pe.FILE_HEADER.SizeOfOptionalHeader)
        section_table_end = opt + pe.FILE_HEADER.SizeOfOptionalHeader + 40 * pe.FILE_HEADER.NumberOfSections
        if section_table_end > len(probe):
            if section_table_end > size:
                raise ImageError("truncated: the section table ends at 0x%x, beyond the end of the data (%d bytes)"
                                 % (section_table_end, size))
            raise ImageError("section table too large (%d sections)" % pe.FILE_HEADER.NumberOfSections)
        if len(pe.sections) != pe.FILE_HEADER.NumberOfSections:
            raise ImageError("the section table holds %d readable entries, the header says %d"
                             % (len(pe.sections), pe.FILE_HEADER.NumberOfSections))

        self.machine = pe.FILE_HEADER.Machine
        self.architecture = MACHINES.get(self.machine, "0x%04x" % self.machine)
        self.size_of_headers = pe.OPTIONAL_HEADER.SizeOfHeaders
        self.checksum_offset = opt + _CHECKSUM_OFFSET
        directories = pe.OPTIONAL_HEADER.NumberOfRvaAndSizes
        max_directories = (pe.FILE_HEADER.SizeOfOptionalHeader - _PE32_PLUS_DATA_DIRECTORY_OFFSET) // 8
        if directories > max_directories:
            raise ImageError("NumberOfRvaAndSizes (%d) does not fit in the optional header" % directories)
        if directories > _SECURITY_DIRECTORY_INDEX:
            self.security_entry_offset = opt + _PE32_PLUS_DATA_DIRECTORY_OFFSET + 8 * _SECURITY_DIRECTORY_INDEX
            self.cert_table_offset, self.cert_table_size = struct.unpack_from(
                "<II", self.data, self.security_entry_offset)
        else:
            self.security_entry_offset = None
            self.cert_table_offset = self.cert_table_size = 0
        if self.size_of_headers > size:
            raise ImageError("truncated: SizeOfHeaders is %d bytes but the data has only %d"
                             % (self.size_of_headers, size))
        if self.size_of_headers < section_table_end:
            raise ImageError("SizeOfHeaders (%d) ends before the section table (0x%x)"
                             % (self.size_of_headers, section_table_end))

        self.sections = []
        for raw in pe.sections:
            name = raw.Name.rstrip(b"\0").decode("ascii", "replace")
            section = Section(name, raw.VirtualAddress, raw.Misc_VirtualSize, raw.PointerToRawData,
                              raw.SizeOfRawData)
            if section.size_of_raw_data and section.pointer_to_raw_data + section.size_of_raw_data > size:
                raise ImageError("truncated: section %s needs bytes 0x%x..0x%x but the data ends at 0x%x"
                                 % (name, section.pointer_to_raw_data,
                                    section.pointer_to_raw_data + section.size_of_raw_data, size))
            self.sections.append(section)

        self._check_symbol_table(pe.FILE_HEADER.PointerToSymbolTable, pe.FILE_HEADER.NumberOfSymbols)
        if self.cert_table_size:
            end = self.cert_table_offset + self.cert_table_size
            if end > size:
                raise ImageError("truncated: the certificate table needs bytes 0x%x..0x%x but the data ends at 0x%x"
                                 % (self.cert_table_offset, end, size))
        hashed = self.size_of_headers + sum(s.size_of_raw_data for s in self.sections)
        if hashed + self.cert_table_size > size:
            raise ImageError("truncated: headers, sections and certificate table need %d bytes but the data has %d"
                             % (hashed + self.cert_table_size, size))

    def _check_symbol_table(self, pointer, count):
        # Bytes past the last section are hashed too, so losing some of them changes the digest silently.
        # When the header points at a COFF symbol table (objcopy leaves one), its string table's size field
        # tells where the image must end at the least.
        if not pointer:
            return
        size = len(self.data)
        strings = pointer + 18 * count
        if strings + 4 > size:
            raise ImageError("truncated: the COFF symbol table needs bytes up to 0x%x but the data ends at 0x%x"
                             % (strings + 4, size))
        strings_size = struct.unpack_from("<I", self.data, strings)[0]
        if strings + strings_size > size:
            raise ImageError("truncated: the COFF string table needs bytes up to 0x%x but the data ends at 0x%x"
                             % (strings + strings_size, size))

    # -- queries -------------------------------------------------------------------------------------
    def section(self, name):
        """The first section with this name, or None."""
        for section in self.sections:
            if section.name == name:
                return section
        return None

    def section_content(self, section):
        """A memoryview of the section's content: min(VirtualSize, SizeOfRawData) bytes (no copy)."""
        start = section.pointer_to_raw_data
        return self.data[start:start + section.content_size]

    def hash_ranges(self):
        """The (start, end) byte ranges the Authenticode digest covers, in hashing order."""
        ranges = []
        if self.security_entry_offset is not None:
            ranges.append((0, self.checksum_offset))
            ranges.append((self.checksum_offset + 4, self.security_entry_offset))
            ranges.append((self.security_entry_offset + 8, self.size_of_headers))
        else:
            ranges.append((0, self.checksum_offset))
            ranges.append((self.checksum_offset + 4, self.size_of_headers))
        hashed = self.size_of_headers
        for section in sorted(self.sections, key=lambda s: s.pointer_to_raw_data):
            if not section.size_of_raw_data:
                continue
            ranges.append((section.pointer_to_raw_data, section.pointer_to_raw_data + section.size_of_raw_data))
            hashed += section.size_of_raw_data
        trailing_end = len(self.data) - self.cert_table_size
        if trailing_end > hashed:
            ranges.append((hashed, trailing_end))
        return [r for r in ranges if r[1] > r[0]]

    def authenticode_digests(self, banks=("sha384",)):
        """{bank: digest bytes} of the Authenticode hash, one pass over the data per bank."""
        hashers = dict((bank, hashlib.new(bank)) for bank in banks)
        data = self.data
        for start, end in self.hash_ranges():
            chunk = data[start:end]
            for hasher in hashers.values():
                hasher.update(chunk)
        return dict((bank, hasher.digest()) for bank, hasher in hashers.items())

    def certificates(self):
        """The PKCS#7 SignedData blobs (DER) of the certificate table's WIN_CERTIFICATE entries, in order."""
        blobs = []
        if not self.cert_table_size:
            return blobs
        offset = self.cert_table_offset
        end = offset + self.cert_table_size
        while offset + 8 <= end:
            length, _revision, cert_type = struct.unpack_from("<IHH", self.data, offset)
            if length < 8 or offset + length > end:
                raise ImageError("malformed certificate table: WIN_CERTIFICATE at 0x%x has length %d" % (offset, length))
            if cert_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA:
                blobs.append(bytes(self.data[offset + 8:offset + length]))
            offset += (length + 7) & ~7
        return blobs


def authenticode_digest(data, bank="sha384", name="image"):
    """The Authenticode digest (bytes) of a PE32+ image held in ``data``."""
    return PeImage(data, name).authenticode_digests((bank,))[bank]
