# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CPU architecture names: the one table from the names users give to the names each consumer needs.

Plain Python (3.9+), no Ansible imports. Every public entry point (module options, role variables, the manifest's
``image.architecture``) accepts ``x86_64``, ``arm64`` and ``aarch64`` (``arm64`` and ``aarch64`` are the same
machine); the filter ``attestable.ami.architecture`` gives roles the same table.

    consumer   x86_64             arm64 / aarch64
    aws        x86_64             arm64              (RegisterImage Architecture, SSM parameter and instance names)
    uefi       X64                AA64               (EFI/BOOT/BOOT<uefi>.EFI, the removable-media loader)
    kiwi       x86_64             aarch64            (KIWI NG's arch, ``uname -m``, RPM)
    uname      x86_64             aarch64
    qemu       x86_64             aarch64            (qemu-system-<qemu>)
    debian     amd64              arm64              (Debian package architecture: grub-efi-<debian>, ...)
    pe         x86_64             aarch64            (what the PE/COFF Machine field 0x8664 / 0xAA64 names)
"""

ACCEPTED = ("x86_64", "arm64", "aarch64")  # what users may write, in option choices and role argument specs

TABLE = {
    "x86_64": {"aws": "x86_64", "uefi": "X64", "kiwi": "x86_64", "uname": "x86_64", "qemu": "x86_64",
               "debian": "amd64", "pe": "x86_64"},
    "aarch64": {"aws": "arm64", "uefi": "AA64", "kiwi": "aarch64", "uname": "aarch64", "qemu": "aarch64",
                "debian": "arm64", "pe": "aarch64"},
}
CONSUMERS = tuple(sorted(TABLE["x86_64"]))

_ALIASES = {"x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}
# Only where a machine names itself (the ESP code's default is this machine): "amd64", Debian's and
# `dpkg --print-architecture`'s name. Not a public spelling.
_MACHINE_ALIASES = dict(_ALIASES, amd64="x86_64")

PE_MACHINES = {0x8664: "x86_64", 0xAA64: "aarch64"}  # PE/COFF Machine -> the table's key


class ArchitectureError(ValueError):
    """An architecture name or a consumer that the table does not know; the message names the input."""


def canonical(name, where="architecture", machine=False):
    """The table's key ("x86_64" or "aarch64") for any accepted spelling (also amd64 when machine is true: a
    machine naming itself); ArchitectureError otherwise."""
    key = (_MACHINE_ALIASES if machine else _ALIASES).get(name) if isinstance(name, str) else None
    if key is None:
        raise ArchitectureError("%s: %r is not supported (expected one of %s)"
                                % (where, name, ", ".join(ACCEPTED)))
    return key


def name_for(name, consumer, where="architecture", machine=False):
    """The name ``consumer`` (aws, uefi, kiwi, uname, qemu, debian, pe) uses for architecture ``name``."""
    if consumer not in CONSUMERS:
        raise ArchitectureError("architecture consumer %r is not known (expected one of %s)"
                                % (consumer, ", ".join(CONSUMERS)))
    return TABLE[canonical(name, where, machine)][consumer]


def boot_file(name, where="architecture", machine=False):
    """The removable-media boot loader path of the EFI System Partition, e.g. "EFI/BOOT/BOOTX64.EFI"."""
    return "EFI/BOOT/BOOT%s.EFI" % name_for(name, "uefi", where, machine)


def boot_files():
    """{table key: boot loader path} for every architecture."""
    return dict((key, boot_file(key)) for key in TABLE)


def same(a, b):
    """True when a and b name the same architecture (both must be accepted spellings)."""
    return canonical(a) == canonical(b)
