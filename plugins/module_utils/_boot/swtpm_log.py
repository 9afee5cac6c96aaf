# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replay the PCR extends a guest sent to swtpm, from swtpm's ``--log level=20`` output.

Plain Python (3.9+), no Ansible imports. At level 20 swtpm logs every TPM command it reads and every response
it writes as hex::

     SWTPM_IO_Read: length 22
     80 01 00 00 00 16 00 00 01 7A ...
     SWTPM_IO_Write: length 43
     80 01 00 00 00 2B ...

plus control-channel traffic (``Ctrl Cmd``/``Ctrl Rsp``). :func:`parse` pairs each command with its response
and :class:`Replay` re-executes, on the host, the commands that change PCRs: TPM2_PCR_Extend (0x182: the
digests given per bank), TPM2_PCR_Event (0x13C: the TPM hashes the event data with every bank) and
TPM2_Startup(CLEAR) / the control channel's CMD_INIT (PCRs reset). A command whose response is not
TPM_RC_SUCCESS changed nothing and is skipped. The result equals the PCR values the TPM holds, with no
cooperation from the guest.
"""

import hashlib
import struct

TPM_CC_PCR_EXTEND = 0x182
TPM_CC_PCR_EVENT = 0x13C
TPM_CC_STARTUP = 0x144
TPM_SU_CLEAR = 0x0000
TPM_ST_SESSIONS = 0x8002
CTRL_CMD_INIT = 0x02

# TPM_ALG_ID -> hashlib name, digest size
ALGORITHMS = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
}
BANK_NAMES = dict((name, alg) for alg, (name, _size) in ALGORITHMS.items())

# PC Client platform: PCRs 17-22 (dynamic root of trust) start as all ones, the others as zeros.
_ONES_PCRS = range(17, 23)
PCR_COUNT = 24


class SwtpmLogError(ValueError):
    """The log (or a TPM command in it) is malformed; the message says where."""


class TpmCommand(object):
    """One TPM command read by swtpm, with the response code it got (None while no response is logged)."""

    __slots__ = ("index", "data", "response_code")

    def __init__(self, index, data, response_code=None):
        self.index = index
        self.data = data
        self.response_code = response_code

    @property
    def code(self):
        return struct.unpack_from(">I", self.data, 6)[0] if len(self.data) >= 10 else None


def _blocks(text):
    """Yield (kind, bytes) for each logged block: kind is the header text before ': length'."""
    kind = None
    length = 0
    data = bytearray()
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if ": length " in stripped:
            if kind is not None:
                yield kind, bytes(data), length
            head, _sep, tail = stripped.partition(": length ")
            kind = head.strip()
            try:
                length = int(tail.split()[0])
            except (ValueError, IndexError):
                raise SwtpmLogError("swtpm log line %d: bad length in %r" % (lineno, stripped))
            data = bytearray()
            continue
        if kind is None:
            continue  # text before the first block (or other log lines)
        try:
            data.extend(bytes.fromhex(stripped))
        except ValueError:
            # another log message between blocks: the current block has ended
            yield kind, bytes(data), length
            kind = None
    if kind is not None:
        yield kind, bytes(data), length


def parse(text):
    """Return the (TpmCommand list, control-command list) in the log, in order.

    A final block shorter than its announced length (swtpm still writing it) is left out; the caller sees
    it on the next read. Control commands are returned as (position, command code) tuples, where position is
    the number of TPM commands read before it.
    """
    commands = []
    controls = []
    pending = None  # a command waiting for its response
    partial = b""  # a command split over several reads
    for kind, data, length in _blocks(text):
        if len(data) < length:
            break  # incomplete last block
        data = data[:length]
        if kind == "SWTPM_IO_Read":
            data = partial + data
            if len(data) < 10:
                partial = data
                continue
            size = struct.unpack_from(">I", data, 2)[0]
            if len(data) < size:
                partial = data
                continue
            partial = b""
            pending = TpmCommand(len(commands), data[:size])
            commands.append(pending)
        elif kind == "SWTPM_IO_Write":
            if pending is not None and len(data) >= 10:
                pending.response_code = struct.unpack_from(">I", data, 6)[0]
            pending = None
        elif kind == "Ctrl Cmd":
            if len(data) >= 4:
                controls.append((len(commands), struct.unpack_from(">I", data, 0)[0]))
    return commands, controls


def _pcr_handle(data, offset):
    handle = struct.unpack_from(">I", data, offset)[0]
    if handle >= PCR_COUNT:
        raise SwtpmLogError("PCR handle 0x%08x is not a PCR" % handle)
    return handle


def _parameters_offset(data):
    """Offset of the parameter area of a one-handle command (after the handle and any auth area)."""
    tag = struct.unpack_from(">H", data, 0)[0]
    offset = 14
    if tag == TPM_ST_SESSIONS:
        auth_size = struct.unpack_from(">I", data, offset)[0]
        offset += 4 + auth_size
    return offset


def decode_extend(data):
    """(pcr, {bank: digest bytes}) of a TPM2_PCR_Extend command."""
    try:
        pcr = _pcr_handle(data, 10)
        offset = _parameters_offset(data)
        count = struct.unpack_from(">I", data, offset)[0]
        offset += 4
        digests = {}
        for _i in range(count):
            alg = struct.unpack_from(">H", data, offset)[0]
            offset += 2
            if alg not in ALGORITHMS:
                raise SwtpmLogError("TPM2_PCR_Extend with unknown hash algorithm 0x%04x" % alg)
            name, size = ALGORITHMS[alg]
            digest = data[offset:offset + size]
            if len(digest) != size:
                raise SwtpmLogError("TPM2_PCR_Extend truncated in its %s digest" % name)
            digests[name] = digest
            offset += size
    except struct.error:
        raise SwtpmLogError("TPM2_PCR_Extend command truncated (%d bytes)" % len(data))
    return pcr, digests


def decode_event(data):
    """(pcr, event data bytes) of a TPM2_PCR_Event command."""
    try:
        pcr = _pcr_handle(data, 10)
        offset = _parameters_offset(data)
        size = struct.unpack_from(">H", data, offset)[0]
    except struct.error:
        raise SwtpmLogError("TPM2_PCR_Event command truncated (%d bytes)" % len(data))
    event = data[offset + 2:offset + 2 + size]
    if len(event) != size:
        raise SwtpmLogError("TPM2_PCR_Event command truncated in its event data")
    return pcr, event


class Replay(object):
    """PCR values of the given banks, replayed from a swtpm log; ``events`` lists every extend in order."""

    def __init__(self, banks=("sha384", "sha256")):
        for bank in banks:
            if bank not in BANK_NAMES:
                raise SwtpmLogError("unknown bank %r (expected one of %s)" % (bank, ", ".join(sorted(BANK_NAMES))))
        self.banks = tuple(banks)
        self.events = []
        self.pcrs = {}
        self.reset()

    def reset(self):
        """TPM (re)start: PCRs to their initial values; earlier events no longer count."""
        self.events = []
        for bank in self.banks:
            size = ALGORITHMS[BANK_NAMES[bank]][1]
            self.pcrs[bank] = [(b"\xff" if n in _ONES_PCRS else b"\0") * size for n in range(PCR_COUNT)]

    def _extend(self, pcr, digests, command_type, command_index):
        for bank in self.banks:
            if bank in digests:
                self.pcrs[bank][pcr] = hashlib.new(bank, self.pcrs[bank][pcr] + digests[bank]).digest()
        self.events.append({
            "pcr": pcr,
            "command": command_type,
            "command_index": command_index,
            "digests": dict((bank, digests[bank].hex()) for bank in self.banks if bank in digests),
        })

    def apply(self, commands, controls=()):
        """Replay the PCR-changing commands; controls are (position, code) pairs as :func:`parse` returns."""
        inits = set(position for position, code in controls if code == CTRL_CMD_INIT)
        for command in commands:
            if command.index in inits:
                self.reset()
            if command.response_code != 0:
                continue
            code = command.code
            if code == TPM_CC_PCR_EXTEND:
                pcr, digests = decode_extend(command.data)
                self._extend(pcr, digests, "TPM2_PCR_Extend", command.index)
            elif code == TPM_CC_PCR_EVENT:
                pcr, event = decode_event(command.data)
                digests = dict((bank, hashlib.new(bank, event).digest()) for bank in self.banks)
                self._extend(pcr, digests, "TPM2_PCR_Event", command.index)
            elif code == TPM_CC_STARTUP and len(command.data) >= 12:
                if struct.unpack_from(">H", command.data, 10)[0] == TPM_SU_CLEAR:
                    self.reset()
        return self

    def value(self, bank, pcr):
        return self.pcrs[bank][pcr].hex()


def replay_text(text, banks=("sha384", "sha256")):
    """Parse a whole swtpm log and replay it; returns the Replay."""
    commands, controls = parse(text)
    return Replay(banks).apply(commands, controls)
