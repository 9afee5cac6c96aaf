# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""boot_console: escapes removed, kernel failures told apart, a growing console file read line by line."""
import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import console as boot_console

CMDLINE = ("[    0.000000] Command line: console=ttyS0 rd.shell=0 systemd.getty_auto=false "
           "rd.kiwi.verity_options=panic-on-corruption")
# As Linux 6.1 prints them (drivers/md/dm-verity-target.c, kernel/panic.c)
VERITY_BLOCK = "[    4.120031] device-mapper: verity: 254:0: data block 41 is corrupted"
VERITY_METADATA = "[    4.120031] device-mapper: verity: 7:1: metadata block 2 is corrupted"
VERITY_PANIC = "[    4.121002] Kernel panic - not syncing: dm-verity device corrupted"
VERITY_RESTART = "[    4.121002] reboot: Restarting system with command 'dm-verity device corrupted'"
INIT_PANIC = "[    2.000000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
PANIC_END = "[    2.000100] ---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---"


def test_clean_drops_escapes_carriage_returns_and_control_bytes():
    raw = "\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: loading\r\n\x1b[0m\x1b[37m\x1b[40mok\x07\x1b]0;title\x07 done\r\n"
    assert boot_console.clean(raw) == "BdsDxe: loading\nok done\n"
    assert boot_console.clean("a\tb\rc") == "a\tb\nc"


@pytest.mark.parametrize("lines, expected", [
    ([CMDLINE, "[    5.0] systemd[1]: Reached target multi-user.target"], None),
    ([CMDLINE, VERITY_BLOCK], "verity"),
    ([VERITY_METADATA], "verity"),
    ([CMDLINE, VERITY_BLOCK, VERITY_PANIC, PANIC_END], "verity"),
    ([VERITY_PANIC], "verity"),
    ([VERITY_RESTART], "verity"),
    (["Verity device detected corruption after activation."], "verity"),
    ([CMDLINE, INIT_PANIC, PANIC_END], "panic"),
    (["[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"], "panic"),
    (["[ 1.0] BUG: kernel NULL pointer dereference, address: 0000000000000000"], None),
])
def test_failure_is_told_from_the_kernel_messages_not_from_the_command_line(lines, expected):
    assert boot_console.failure("\n".join(lines)) == expected


def test_panic_end_marks_the_last_line_of_a_panic():
    assert boot_console.PANIC_END.search(PANIC_END)
    assert not boot_console.PANIC_END.search(INIT_PANIC)


def test_reader_hands_out_complete_lines_only_until_final(tmp_path):
    path = tmp_path / "console.log"
    reader = boot_console.ConsoleReader(str(path))
    assert reader.read() == ""  # no file yet
    with open(str(path), "wb") as handle:
        handle.write(b"\x1b[0mfirst line\r\nATTESTABLE-USERSPACE")
    assert reader.read() == "first line\n"
    with open(str(path), "ab") as handle:
        handle.write(b"-REACHED\r\nlast \x1b[1")
    assert reader.read() == "ATTESTABLE-USERSPACE-REACHED\n"  # the split marker arrives whole
    with open(str(path), "ab") as handle:
        handle.write(b"mwords")
    assert reader.read() == ""
    assert reader.read(final=True) == "last words"
    assert reader.tail() == ["first line", "ATTESTABLE-USERSPACE-REACHED", "last words"]


def test_tail_keeps_the_last_non_empty_lines():
    lines = ["line %d" % n for n in range(100)] + ["", "   "]
    assert boot_console.tail(lines, 3) == ["line 97", "line 98", "line 99"]
    assert len(boot_console.tail(lines)) == boot_console.TAIL_LINES
