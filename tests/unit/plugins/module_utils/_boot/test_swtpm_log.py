# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""swtpm_log: parsing swtpm's level-20 log and replaying PCR extends, on logs written here in swtpm's format."""
import hashlib
import struct

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._boot import qemu as qemu_boot, swtpm_log

ALG = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C}


def _block(kind, data):
    lines = [" %s: length %d" % (kind, len(data))]
    for at in range(0, len(data), 16):
        lines.append(" " + " ".join("%02X" % b for b in data[at:at + 16]) + " ")
    return "\n".join(lines) + "\n"


def _auth_area():
    # TPM_RS_PW session: handle, empty nonce, attributes 0, empty hmac
    return struct.pack(">IHBH", 0x40000009, 0, 0, 0)


def _command(code, handle, params, sessions=True):
    body = struct.pack(">I", handle)
    if sessions:
        auth = _auth_area()
        body += struct.pack(">I", len(auth)) + auth
    body += params
    tag = 0x8002 if sessions else 0x8001
    return struct.pack(">HII", tag, 10 + len(body), code) + body


def extend_command(pcr, digests, sessions=True):
    params = struct.pack(">I", len(digests))
    for bank, digest in digests.items():
        params += struct.pack(">H", ALG[bank]) + digest
    return _command(swtpm_log.TPM_CC_PCR_EXTEND, pcr, params, sessions)


def event_command(pcr, data):
    return _command(swtpm_log.TPM_CC_PCR_EVENT, pcr, struct.pack(">H", len(data)) + data)


def startup_clear():
    return struct.pack(">HIIH", 0x8001, 12, swtpm_log.TPM_CC_STARTUP, 0)


def response(rc=0):
    return struct.pack(">HII", 0x8001, 10, rc)


def log_of(*commands):
    """A swtpm log: each (command bytes, response code) as a Read/Write pair."""
    text = " Ctrl Cmd: length 4\n 00 00 00 02 \n Ctrl Rsp: length 4\n 00 00 00 00 \n"
    for command, rc in commands:
        text += _block("SWTPM_IO_Read", command) + _block("SWTPM_IO_Write", response(rc))
    return text


def digests(text):
    return {"sha256": hashlib.sha256(text).digest(), "sha384": hashlib.sha384(text).digest()}


def chain(bank, *digests_):
    value = b"\0" * hashlib.new(bank).digest_size
    for d in digests_:
        value = hashlib.new(bank, value + d).digest()
    return value.hex()


def test_extends_replay_to_the_hash_chain_per_bank():
    first, second = digests(b"one"), digests(b"two")
    replay = swtpm_log.replay_text(log_of((startup_clear(), 0), (extend_command(4, first), 0),
                                          (extend_command(4, second), 0), (extend_command(7, first), 0)))
    for bank in ("sha256", "sha384"):
        assert replay.value(bank, 4) == chain(bank, first[bank], second[bank])
        assert replay.value(bank, 7) == chain(bank, first[bank])
        assert replay.value(bank, 12) == "00" * hashlib.new(bank).digest_size
    assert [(e["pcr"], e["command"]) for e in replay.events] == [
        (4, "TPM2_PCR_Extend"), (4, "TPM2_PCR_Extend"), (7, "TPM2_PCR_Extend")]
    assert replay.events[0]["digests"]["sha384"] == first["sha384"].hex()


def test_a_bank_missing_from_an_extend_stays_unchanged_and_unknown_banks_are_refused():
    mixed = {"sha1": b"\x11" * 20, "sha384": digests(b"x")["sha384"]}
    replay = swtpm_log.replay_text(log_of((extend_command(4, mixed), 0)))
    assert replay.value("sha256", 4) == "00" * 32
    assert replay.value("sha384", 4) == chain("sha384", digests(b"x")["sha384"])
    with pytest.raises(swtpm_log.SwtpmLogError, match="unknown bank 'md5'"):
        swtpm_log.Replay(("md5",))


def test_a_failed_command_changes_nothing():
    replay = swtpm_log.replay_text(log_of((extend_command(4, digests(b"denied")), 0x0922)))
    assert replay.value("sha384", 4) == "00" * 48
    assert replay.events == []


def test_startup_clear_and_ctrl_init_reset_the_pcrs():
    text = log_of((extend_command(4, digests(b"before")), 0), (startup_clear(), 0),
                  (extend_command(4, digests(b"after")), 0))
    replay = swtpm_log.replay_text(text)
    assert replay.value("sha256", 4) == chain("sha256", digests(b"after")["sha256"])
    assert len(replay.events) == 1
    # the VM reset: qemu sends CMD_INIT on the control channel, then the firmware extends again
    again = (text + _block("Ctrl Cmd", struct.pack(">I", swtpm_log.CTRL_CMD_INIT))
             + _block("SWTPM_IO_Read", extend_command(4, digests(b"reboot"))) + _block("SWTPM_IO_Write", response()))
    assert swtpm_log.replay_text(again).value("sha256", 4) == chain("sha256", digests(b"reboot")["sha256"])


def test_pcr_event_is_hashed_by_the_tpm_in_every_bank():
    replay = swtpm_log.replay_text(log_of((event_command(12, b"console=ttyS0"), 0)))
    for bank in ("sha256", "sha384"):
        assert replay.value(bank, 12) == chain(bank, hashlib.new(bank, b"console=ttyS0").digest())
    assert replay.events[0]["command"] == "TPM2_PCR_Event"


def test_extend_without_sessions_and_drtm_pcrs_start_as_ones():
    replay = swtpm_log.replay_text(log_of((extend_command(17, digests(b"d"), sessions=False), 0)))
    ones = b"\xff" * 48
    assert replay.value("sha384", 17) == hashlib.sha384(ones + digests(b"d")["sha384"]).hexdigest()
    assert replay.value("sha384", 22) == ones.hex()


def test_a_command_split_over_two_reads_is_joined():
    command = extend_command(4, digests(b"split"))
    text = (_block("SWTPM_IO_Read", command[:7]) + _block("SWTPM_IO_Read", command[7:])
            + _block("SWTPM_IO_Write", response()))
    assert swtpm_log.replay_text(text).value("sha384", 4) == chain("sha384", digests(b"split")["sha384"])


def test_a_block_still_being_written_is_left_for_the_next_read():
    complete = log_of((extend_command(4, digests(b"a")), 0))
    partial = _block("SWTPM_IO_Read", extend_command(4, digests(b"b")))
    partial = partial[:len(partial) // 2]
    commands, _controls = swtpm_log.parse(complete + partial)
    assert len(commands) == 1


def test_other_log_lines_between_blocks_are_ignored():
    text = "swtpm: some message\n" + log_of((extend_command(4, digests(b"a")), 0)) + "Data client disconnected\n"
    assert swtpm_log.replay_text(text).value("sha384", 4) == chain("sha384", digests(b"a")["sha384"])


@pytest.mark.parametrize("cut", [12, 14, 20, 27, 30, 60])
def test_truncated_extend_commands_are_reported(cut):
    command = extend_command(4, digests(b"t"))
    with pytest.raises(swtpm_log.SwtpmLogError, match="truncated"):
        swtpm_log.decode_extend(command[:cut])


def test_a_handle_that_is_no_pcr_is_reported():
    with pytest.raises(swtpm_log.SwtpmLogError, match="not a PCR"):
        swtpm_log.decode_extend(extend_command(0x40000001, digests(b"t")))


def test_bad_length_line_is_reported():
    with pytest.raises(swtpm_log.SwtpmLogError, match="line 1: bad length"):
        swtpm_log.parse(" SWTPM_IO_Read: length many\n")


def test_exit_boot_services_is_found_in_pcr5_only():
    ebs = digests(qemu_boot.EXIT_BOOT_SERVICES)
    text = log_of((extend_command(4, ebs), 0), (extend_command(4, digests(b"x")), 0), (extend_command(5, ebs), 0),
                  (extend_command(10, digests(b"ima")), 0))
    commands, _controls = swtpm_log.parse(text)
    assert qemu_boot._exit_boot_services_index(commands) == 2
    commands, _controls = swtpm_log.parse(log_of((extend_command(5, ebs), 0x101)))
    assert qemu_boot._exit_boot_services_index(commands) is None


def test_console_tail_drops_the_firmware_terminal_escapes(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("\x1b[2J\x1b[01;01HUEFI \x1b[1m\x1b[33m\x1b[40mShell\x1b[=3h> ")
    assert qemu_boot._tail(str(log)) == "UEFI Shell> "
