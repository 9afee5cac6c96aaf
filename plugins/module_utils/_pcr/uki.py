# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unified Kernel Images: what a systemd-stub UKI holds and which stub version will boot it.

Plain Python (3.9+), no Ansible imports. A UKI is a PE32+ systemd stub with extra sections: `.linux` (the
kernel, itself a PE32+ image), `.initrd`, `.cmdline`, `.osrel`, `.uname`, `.sdmagic` (the stub's version
string `#### LoaderInfo: systemd-stub <version> ####`), ... Section contents are
min(VirtualSize, SizeOfRawData) bytes from PointerToRawData; the rest of the raw data is file alignment.
"""

import re

from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import ImageError, PeImage

# The stub version of AL2023's systemd-stub, used when its UKI has no .sdmagic (as AWS's tool does).
AL2023_STUB_MAJOR = 252
_SDMAGIC = re.compile(r"#### LoaderInfo: systemd-stub ([^ ]+) ####")
_MAJOR = re.compile(r"^([0-9]+)")


def parse_os_release(text):
    """os-release(5) text -> dict (quotes removed, simple backslash escapes undone)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key.strip()] = value
    return values


def _text(view):
    return bytes(view).split(b"\0", 1)[0].decode("utf-8", "replace")


class Uki(object):
    """The UKI-specific facts of a PE image that has a `.linux` section."""

    def __init__(self, image):
        self.image = image
        linux = image.section(".linux")
        if linux is None:
            raise ImageError("has no .linux section: not a UKI")
        self.sections = [s.name for s in image.sections]
        self.kernel_data = image.section_content(linux)
        try:
            self.kernel = PeImage(self.kernel_data, name="%s .linux" % image.name)
        except ImageError as exc:
            raise ImageError("its .linux section (the kernel, %d bytes at 0x%x) is not a PE32+ image: %s"
                             % (linux.content_size, linux.pointer_to_raw_data, exc))
        self.cmdline = self._section_text(".cmdline")
        osrel_text = self._section_text(".osrel")
        self.os_release = parse_os_release(osrel_text) if osrel_text is not None else {}
        self.uname = self._section_text(".uname")
        self.stub_version, self.stub_version_source = self._stub_version()
        self.stub_major = int(_MAJOR.match(self.stub_version).group(1))

    def _section_text(self, name):
        section = self.image.section(name)
        return None if section is None else _text(self.image.section_content(section))

    def _stub_version(self):
        sdmagic = self._section_text(".sdmagic")
        if sdmagic is not None:
            match = _SDMAGIC.search(sdmagic)
            if not match or not _MAJOR.match(match.group(1)):
                raise ImageError("its .sdmagic section %r does not hold '#### LoaderInfo: systemd-stub <version> ####'"
                                 % sdmagic[:80])
            return match.group(1), ".sdmagic"
        if self.os_release.get("NAME") == "Amazon Linux" and self.os_release.get("VERSION") == "2023":
            return str(AL2023_STUB_MAJOR), ".osrel (Amazon Linux 2023 ships systemd-stub 252)"
        raise ImageError("Could not find .sdmagic section of UKI, and its .osrel is not Amazon Linux 2023: "
                         "the systemd-stub version (which decides whether the kernel is measured into PCR4) "
                         "cannot be told")

    def measures_kernel(self, secure_boot):
        """Whether this stub measures the embedded kernel into PCR4 (via LoadImage) when it boots."""
        if self.stub_major >= 258:
            return False
        return not (secure_boot and self.stub_major >= 252)

    def details(self):
        """A JSON-friendly summary."""
        return {
            "sections": list(self.sections),
            "stub_version": self.stub_version,
            "stub_major": self.stub_major,
            "stub_version_source": self.stub_version_source,
            "architecture": self.image.architecture,
            "kernel_architecture": self.kernel.architecture,
            "kernel_size": len(self.kernel_data),
            "cmdline": self.cmdline,
            "os_release": {"NAME": self.os_release.get("NAME"), "VERSION": self.os_release.get("VERSION")},
            "uname": self.uname,
        }


def analyse(image):
    """A Uki for a PeImage with a `.linux` section, else None."""
    if image.section(".linux") is None:
        return None
    return Uki(image)
