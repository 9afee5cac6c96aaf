# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the measured_boot module does, as plain Python (3.9+, no Ansible imports).

    check_inputs(params)   validate every input before anything boots (MeasuredBootError names the input)
    measure(params)        build a temporary ESP (for a UKI) or use the GPT disk, enroll Secure Boot keys into a
                           copy of the variable store, boot (qemu_boot.boot), compare with ``expected``

``params`` holds the module's options: uki, disk, arch, firmware_code, firmware_vars, pk, kek, db, dbx, timeout,
expected, banks, until, console_expect, expect_boot_failure. Results use pcr_compute's formats: ``measured``
like its ``measurements``, ``banks`` per bank.
"""

import os
import re
import shutil
import tempfile

from ansible_collections.attestable.ami.plugins.module_utils._boot import console as boot_console, esp as esp_image
from ansible_collections.attestable.ami.plugins.module_utils._boot import ovmf_vars, qemu as qemu_boot
from ansible_collections.attestable.ami.plugins.module_utils._pcr import efi_siglist
from ansible_collections.attestable.ami.plugins.module_utils._common import architectures, measurements as meas

REFERENCE_PCRS = (4, 7, 12)
_DIGEST_SIZES = {"sha384": 48, "sha256": 32}
KEY_OPTIONS = ("pk", "kek", "db", "dbx")
# Seconds to wait by default: firmware to ExitBootServices (~10-30 s under TCG), an OS to userspace (~1 min
# idle for a Debian image with systemd; several times that on a loaded 2-core machine).
DEFAULT_TIMEOUTS = {"firmware": 300, "userspace": 900}
BOOT_FAILURES = ("verity", "panic", "timeout", "exited")


class MeasuredBootError(Exception):
    """A failure to report to the user; ``result`` holds whatever was measured before it."""

    def __init__(self, message, result=None):
        super(MeasuredBootError, self).__init__(message)
        self.result = result or {}


def check_expected(expected):
    """The expected PCRs as {pcr number: lowercase hex}; MeasuredBootError when the dict is not usable."""
    if not isinstance(expected, dict) or not expected:
        raise MeasuredBootError("expected: give a measurements dict as pcr_compute returns it "
                                "({HashAlgorithm: SHA384, PCR4: <96 hex>, PCR7: ..., PCR12: ...})")
    pcrs = {}
    for key, value in expected.items():
        if key == meas.HASH_ALGORITHM_KEY:
            if not meas.is_hash_algorithm(str(value), any_case=True):
                raise MeasuredBootError("expected: HashAlgorithm %r is not supported (expected SHA384)" % (value,))
            continue
        index = meas.pcr_index(key)
        if index is None:
            raise MeasuredBootError("expected: key %r is not a PCR (expected HashAlgorithm and PCR0 to PCR23, "
                                    "as pcr_compute returns in measurements)" % (key,))
        if not meas.is_pcr_value(value):
            raise MeasuredBootError("expected: %s must be 96 hexadecimal characters (a SHA-384 PCR value), got %r"
                                    % (key, value))
        pcrs[index] = value.lower()
    if not pcrs:
        raise MeasuredBootError("expected: no PCR given (expected at least one of PCR4, PCR7, PCR12)")
    return pcrs


def _check_file(option, path, hint):
    if not path or not os.path.isfile(path):
        raise MeasuredBootError("%s: %s is not a file (%s)" % (option, path, hint))
    if not os.access(path, os.R_OK):
        raise MeasuredBootError("%s: %s is not readable" % (option, path))


def check_inputs(params):
    """Fill in firmware defaults and validate everything that can be checked without booting.

    Returns the key databases read from the ESL files ({"pk": bytes, ...}, only those given).
    """
    try:  # x86_64, arm64 or aarch64; the name qemu_boot uses from here on
        arch = params["arch"] = architectures.name_for(params.get("arch") or "x86_64", "qemu", "arch")
    except architectures.ArchitectureError as exc:
        raise MeasuredBootError(str(exc))
    if arch not in qemu_boot.ARCHITECTURES:
        raise MeasuredBootError("arch: %r is not supported (expected one of %s)"
                                % (arch, ", ".join(sorted(qemu_boot.ARCHITECTURES))))
    defaults = qemu_boot.ARCHITECTURES[arch]
    if bool(params.get("uki")) == bool(params.get("disk")):
        raise MeasuredBootError("give exactly one of uki (an EFI image to boot from a temporary ESP) or disk "
                                "(a raw GPT disk image)")
    if params.get("uki"):
        _check_file("uki", params["uki"], "expected a Unified Kernel Image or other EFI application")
        with open(params["uki"], "rb") as handle:
            if handle.read(2) != b"MZ":
                raise MeasuredBootError("uki: %s is not a PE/EFI image (no 'MZ' header); expected a Unified "
                                        "Kernel Image or other EFI application" % params["uki"])
    else:
        _check_file("disk", params["disk"], "expected a raw GPT disk image")
        try:
            esp_image.find_esp(params["disk"])
        except esp_image.EspImageError as exc:
            raise MeasuredBootError("disk: %s" % exc)
    for option in ("firmware_code", "firmware_vars"):
        params[option] = params.get(option) or defaults[option.split("_")[1]]
        _check_file(option, params[option],
                    "the %s firmware; install the Debian packages %s or give its path" % (arch, defaults["packages"]))
    timeout = params.get("timeout")
    if timeout is not None and timeout <= 0:
        raise MeasuredBootError("timeout: %r must be a positive number of seconds" % (timeout,))
    check_boot_options(params)
    if params.get("expected") is not None:
        check_expected(params["expected"])
    keys = {}
    for option in KEY_OPTIONS:
        path = params.get(option)
        if path is None:
            continue
        _check_file(option, path, "expected an EFI_SIGNATURE_LIST file, as given to pcr_compute")
        with open(path, "rb") as handle:
            data = handle.read()
        try:
            efi_siglist.parse(data)
        except efi_siglist.SignatureListError as exc:
            raise MeasuredBootError("%s: %s is not a valid EFI signature list: %s" % (option, path, exc))
        keys[option] = data
    # KEK/db without PK leave the firmware in setup mode (nothing enforced); pcr_compute also calls that
    # standard boot, so the two stay comparable.
    try:
        qemu_boot.require_tools(arch)
    except qemu_boot.BootError as exc:
        raise MeasuredBootError(str(exc))
    return keys


def check_boot_options(params):
    """until, console_expect and expect_boot_failure: known values that fit together (MeasuredBootError if not)."""
    until = params.get("until") or "firmware"
    if until not in qemu_boot.UNTIL:
        raise MeasuredBootError("until: %r is not supported (expected one of %s)" % (until, ", ".join(qemu_boot.UNTIL)))
    expect = params.get("console_expect")
    if expect is not None:
        if until != "userspace":
            raise MeasuredBootError("console_expect: only used with until: userspace (the firmware stage stops "
                                    "before the OS prints anything)")
        if not str(expect).strip():
            raise MeasuredBootError("console_expect: give a regular expression that the OS prints on its serial "
                                    "console once it has booted (default %s)" % boot_console.DEFAULT_EXPECT)
        try:
            re.compile(expect)
        except re.error as exc:
            raise MeasuredBootError("console_expect: %r is not a valid regular expression (%s)" % (expect, exc))
    failure = params.get("expect_boot_failure")
    if failure is not None:
        if failure not in BOOT_FAILURES:
            raise MeasuredBootError("expect_boot_failure: %r is not a boot failure (expected one of %s)"
                                    % (failure, ", ".join(BOOT_FAILURES)))
        if until != "userspace" and failure in ("verity", "panic"):
            raise MeasuredBootError("expect_boot_failure: %s needs until: userspace (the firmware stage stops at "
                                    "ExitBootServices, before the kernel runs)" % failure)
    return until


def _pcr_values(replay, bank, pcrs):
    return dict(("PCR%d" % n, replay.value(bank, n)) for n in pcrs)


def _result(outcome, params, pcrs):
    banks = list(params.get("banks") or ["sha384"])
    replay = outcome.replay
    measured = {meas.HASH_ALGORITHM_KEY: meas.HASH_ALGORITHM}
    measured.update(_pcr_values(replay, "sha384", pcrs))
    events = []
    for order, event in enumerate(replay.events):
        events.append({
            "order": order,
            "pcr": event["pcr"],
            "command": event["command"],
            "digests": dict((b, d) for b, d in event["digests"].items() if b in banks),
        })
    return {
        "measured": measured,
        "banks": dict((bank, _pcr_values(replay, bank, pcrs)) for bank in banks),
        "events": events,
        "stop_reason": outcome.stop_reason,
        "duration": outcome.duration,
        "console": outcome.console,
        "until": outcome.until,
        "boot_seconds": outcome.boot_seconds,
        "reached_userspace": outcome.reached_userspace,
        "boot_failed": outcome.boot_failed,
        "console_tail": outcome.console_tail,
    }


def _predicted_events(image, keys_paths):
    """The engine's events for the booted image (or an explanation of why there are none)."""
    # Imported here: pcr_engine needs pefile (and cryptography for Secure Boot); the boot itself does not.
    try:
        from ansible_collections.attestable.ami.plugins.module_utils._pcr import engine as pcr_engine
    except ImportError as exc:
        return None, "the PCR engine cannot be imported here (%s)" % exc
    if image is None:
        return None, "no EFI loader could be read from the disk's ESP"
    try:
        predicted = pcr_engine.compute([image], banks=("sha384",), **keys_paths)
    except (pcr_engine.PcrError, ValueError) as exc:
        return None, "the engine cannot predict this image: %s" % exc
    return predicted, None


def side_by_side(pcr, measured_events, predicted_events):
    """Rows pairing the n-th measured extend of a PCR with the n-th predicted one (SHA-384 digests)."""
    measured = [e["digests"].get("sha384") for e in measured_events if e["pcr"] == pcr]
    predicted = [e for e in predicted_events if e["pcr"] == pcr]
    rows = []
    for position in range(max(len(measured), len(predicted))):
        got = measured[position] if position < len(measured) else None
        want = predicted[position] if position < len(predicted) else None
        want_digest = want["digests"].get("sha384") if want else None
        rows.append({
            "position": position,
            "measured": got,
            "predicted": want_digest,
            "predicted_type": want.get("type") if want else None,
            "predicted_description": want.get("description") if want else None,
            "match": got is not None and got == want_digest,
        })
    return rows


def _compare(result, replay_events, expected, image, keys_paths):
    """Raise MeasuredBootError (with the comparison) when a measured PCR differs from expected."""
    differing = sorted(n for n, value in expected.items() if result["measured"]["PCR%d" % n] != value)
    result["differing"] = ["PCR%d" % n for n in differing]
    if not differing:
        return
    predicted, why_not = _predicted_events(image, keys_paths)
    comparison = {}
    for n in differing:
        entry = {"expected": expected[n], "measured": result["measured"]["PCR%d" % n]}
        if predicted is not None:
            entry["predicted"] = predicted["banks"]["sha384"].get("PCR%d" % n)
            entry["events"] = side_by_side(n, replay_events, predicted["events"])
        else:
            entry["events"] = side_by_side(n, replay_events, [])
            entry["prediction_unavailable"] = why_not
        comparison["PCR%d" % n] = entry
    result["comparison"] = comparison
    lines = ["%s: expected %s, measured %s" % ("PCR%d" % n, expected[n], result["measured"]["PCR%d" % n])
             for n in differing]
    raise MeasuredBootError("the measured boot does not match expected: %s. 'comparison' shows the measured "
                            "extends beside the engine's predicted events for this image."
                            % "; ".join(lines), result)


def _last_line(lines, pattern):
    for line in reversed(lines):
        if re.search(pattern, line, re.IGNORECASE):
            return line.strip()
    return None


def _console_excerpt(outcome, lines=8):
    return " | ".join(outcome.console_tail[-lines:]) or "(nothing)"


def describe_failure(outcome, params):
    """A message saying how the boot failed, with the console lines that show it."""
    until = outcome.until
    timeout = params.get("timeout") or DEFAULT_TIMEOUTS[until]
    expect = params.get("console_expect") or boot_console.DEFAULT_EXPECT
    loader = qemu_boot.ARCHITECTURES[params.get("arch") or "x86_64"]["loader"]
    if outcome.boot_failed == "verity":
        line = _last_line(outcome.console_tail, r"verity|corrupt") or "dm-verity"
        return ("the boot failed: dm-verity found the verity-protected root corrupted (%s) after %s s; console: %s"
                % (line, outcome.boot_seconds, _console_excerpt(outcome)))
    if outcome.boot_failed == "panic":
        line = _last_line(outcome.console_tail, r"Kernel panic") or "Kernel panic"
        return "the kernel panicked after %s s: %s; console: %s" % (outcome.boot_seconds, line, _console_excerpt(outcome))
    if not outcome.exit_boot_services:
        if outcome.boot_failed == "timeout":
            return ("no OS loader called ExitBootServices within %s s (the firmware did not hand over to an OS: no "
                    "bootable %s, or, with Secure Boot, an image not signed by a db key); console: %s"
                    % (timeout, loader, outcome.console[-1024:].strip()))
        return ("the guest stopped (qemu rc=%s) before any OS loader called ExitBootServices, so the measurements "
                "are not final; qemu said: %s; console: %s"
                % (outcome.qemu_returncode, outcome.qemu_output, outcome.console[-1024:].strip()))
    if outcome.boot_failed == "timeout":
        return ("the OS did not print a line matching %r on its serial console within %s s (the firmware handed "
                "over: ExitBootServices was measured); console: %s" % (expect, timeout, _console_excerpt(outcome)))
    return ("the guest stopped (qemu rc=%s) after %s s without printing a line matching %r on its serial console; "
            "console: %s" % (outcome.qemu_returncode, outcome.boot_seconds, expect, _console_excerpt(outcome)))


def check_outcome(outcome, params, result):
    """Raise MeasuredBootError unless the boot ended as asked (reached its stage, or failed as expected)."""
    wanted = params.get("expect_boot_failure")
    if wanted is None:
        if outcome.boot_failed is not None:
            raise MeasuredBootError(describe_failure(outcome, params), result)
        if not outcome.exit_boot_services:
            raise MeasuredBootError("the console matched %r, but no ExitBootServices was measured, so the "
                                    "measurements are not final (the pattern matched before the OS loader ran?)"
                                    % (params.get("console_expect") or boot_console.DEFAULT_EXPECT), result)
        return
    if outcome.boot_failed == wanted:
        return
    if outcome.boot_failed is None:
        got = ("it reached userspace after %s s (the console matched)" % outcome.boot_seconds
               if outcome.reached_userspace else "it reached ExitBootServices")
        raise MeasuredBootError("expect_boot_failure: the boot was expected to fail with %s, but %s; console: %s"
                                % (wanted, got, _console_excerpt(outcome)), result)
    raise MeasuredBootError("expect_boot_failure: the boot was expected to fail with %s, but it failed with %s: %s"
                            % (wanted, outcome.boot_failed, describe_failure(outcome, params)), result)


def measure(params, tmpdir=None):
    """Boot and measure; returns the result dict, or raises MeasuredBootError (with a partial result)."""
    keys = check_inputs(params)
    expected = check_expected(params["expected"]) if params.get("expected") is not None else {}
    pcrs = sorted(set(REFERENCE_PCRS) | set(expected))
    arch = params.get("arch") or "x86_64"
    until = params.get("until") or "firmware"
    loader = qemu_boot.ARCHITECTURES[arch]["loader"]
    keys_paths = dict((option, params[option]) for option in keys)
    work = tempfile.mkdtemp(prefix="attestable-measured-boot-", dir=tmpdir)
    try:
        if params.get("uki"):
            image = params["uki"]
            disk = esp_image.make_esp(os.path.join(work, "esp.img"), {loader: image})
        else:
            disk = params["disk"]
            image = os.path.join(work, os.path.basename(loader))
            try:
                offset, _size = esp_image.find_esp(disk)
                esp_image.extract_file(disk, loader, image, offset)
            except esp_image.EspImageError:
                image = None  # only the prediction shown on a mismatch needs it
        vars_path = params["firmware_vars"]
        if keys:
            vars_path = ovmf_vars.enroll(params["firmware_vars"], os.path.join(work, "vars.fd"), **keys)
        try:
            outcome = qemu_boot.boot(disk, params["firmware_code"], vars_path, arch=arch,
                                     timeout=params.get("timeout") or DEFAULT_TIMEOUTS[until], tmpdir=tmpdir,
                                     until=until, console_expect=params.get("console_expect"))
        except qemu_boot.BootError as exc:
            partial = _result(exc.outcome, params, pcrs) if exc.outcome else {}
            raise MeasuredBootError(str(exc), partial)
        result = _result(outcome, params, pcrs)
        result["secure_boot"] = "pk" in keys
        check_outcome(outcome, params, result)
        if expected and outcome.exit_boot_services:
            _compare(result, outcome.replay.events, expected, image, keys_paths)
        return result
    except (esp_image.EspImageError, ovmf_vars.VarStoreError) as exc:
        raise MeasuredBootError(str(exc))
    finally:
        shutil.rmtree(work, ignore_errors=True)
