# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a guest's serial console: strip terminal escapes, keep the last lines, tell how a boot failed.

Plain Python (3.9+), no Ansible imports.

    clean(text)            console text without terminal escape sequences, carriage returns or control bytes
    failure(text)          "verity", "panic" or None: what the kernel's messages in the text say
    ConsoleReader(path)    reads a console file as it grows: new complete lines, cleaned
"""

import re

DEFAULT_EXPECT = "ATTESTABLE-USERSPACE-REACHED"
TAIL_LINES = 40

# CSI (ESC [ ... final byte, including the private "=" and "?" forms OVMF writes), OSC (ESC ] ... BEL/ST),
# then any other two-byte escape.
_ESCAPES = re.compile(r"\x1b\[[0-9;=?<>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# dm-verity's own kernel messages (drivers/md/dm-verity-target.c) and veritysetup's; deliberately not the
# option names ("panic-on-corruption", "restart-on-corruption") that the echoed kernel command line holds.
_VERITY = re.compile(
    r"dm-verity device corrupted"                             # panic()/kernel_restart() on corruption
    r"|device-mapper: verity: .*(?:block \d+ is corrupted|reached maximum errors)"
    r"|Verity device detected corruption"                     # veritysetup open/status
    r"|Verification of (?:data area|root hash) failed",       # veritysetup verify (in an initrd)
    re.IGNORECASE)
_PANIC = re.compile(r"Kernel panic - not syncing")
# printed last by panic(); after it the kernel halts (or reboots with panic=N)
PANIC_END = re.compile(r"---\[ end Kernel panic")


def clean(text):
    """Console text as a person reads it: escapes and control characters removed, line ends normalised."""
    text = _ESCAPES.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def failure(text):
    """'verity' when the console shows a dm-verity corruption, 'panic' for another kernel panic, else None."""
    if _VERITY.search(text):
        return "verity"
    if _PANIC.search(text):
        return "panic"
    return None


def tail(lines, count=TAIL_LINES):
    """The last ``count`` non-empty lines."""
    kept = [line.rstrip() for line in lines if line.strip()]
    return kept[-count:]


class ConsoleReader(object):
    """Follows a console file; ``read()`` returns the cleaned text of the complete lines added since last time.

    Only complete lines are handed out while the guest runs (an escape sequence or a marker may be split
    across two writes); ``read(final=True)`` also returns an unterminated last line.
    """

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.pending = b""
        self.lines = []

    def read(self, final=False):
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except (IOError, OSError):
            data = b""
        self.offset += len(data)
        data = self.pending + data
        if final:
            complete, self.pending = data, b""
        else:
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            complete, self.pending = data[:cut], data[cut:]
        if not complete:
            return ""
        text = clean(complete.decode("utf-8", "replace"))
        self.lines.extend(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))
        return text

    def tail(self, count=TAIL_LINES):
        return tail(self.lines, count)
