# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run AWS's `nitro-tpm-pcr-compute` (package aws-nitro-tpm-tools) and read its measurements.

Plain Python (3.9+), no Ansible imports. The tool prints
``{"Measurements": {"HashAlgorithm": "SHA384", "PCR4": "<96 hex>", "PCR7": ..., "PCR12": ...}}``;
versions before 1.1.0 print no PCR12, and a policy built from them would not bind PCR12, so that is an error.
The tool has no --version flag: the version comes from the rpm database when rpm exists.
"""

import json
import os
import re
import shutil

from ansible_collections.attestable.ami.plugins.module_utils._common import measurements as meas, processes

TOOL_NAME = "nitro-tpm-pcr-compute"
PACKAGE = "aws-nitro-tpm-tools"
MINIMUM_VERSION = (1, 1, 0)
_VERSION = re.compile(r"^([0-9]+(?:\.[0-9]+)*)")


class ToolError(RuntimeError):
    """The tool is missing, failed, is too old, or printed something unexpected."""


def find(tool_path=None):
    """Absolute path of the tool: ``tool_path`` when given (must be executable), else from PATH, else None."""
    if tool_path:
        if os.path.isfile(tool_path) and os.access(tool_path, os.X_OK):
            return os.path.abspath(tool_path)
        raise ToolError("%s: tool_path %s is not an executable file" % (TOOL_NAME, tool_path))
    return shutil.which(TOOL_NAME)


def command(tool, images, pk=None, kek=None, db=None, dbx=None):
    """The argument list: --image repeated in load order, then the signature lists given."""
    argv = [tool]
    for image in images:
        argv += ["--image", image]
    for flag, path in (("--PK", pk), ("--KEK", kek), ("--db", db), ("--dbx", dbx)):
        if path is not None:
            argv += [flag, path]
    return argv


def parse_output(stdout):
    """The ``Measurements`` dict from the tool's stdout, checked (lowercase hex, PCR12 present)."""
    try:
        document = json.loads(stdout)
    except ValueError as exc:
        raise ToolError("%s printed something that is not JSON (%s): %r" % (TOOL_NAME, exc, stdout[:200]))
    measurements = document.get("Measurements") if isinstance(document, dict) else None
    if not isinstance(measurements, dict):
        raise ToolError("%s printed no 'Measurements' object: %r" % (TOOL_NAME, stdout[:200]))
    if not meas.is_hash_algorithm(measurements.get(meas.HASH_ALGORITHM_KEY)):
        raise ToolError("%s reports HashAlgorithm %r, expected %r"
                        % (TOOL_NAME, measurements.get(meas.HASH_ALGORITHM_KEY), meas.HASH_ALGORITHM))
    if "PCR12" not in measurements:
        raise ToolError("%s printed no PCR12: it is older than 1.1.0. Without PCR12 a key policy cannot bind the "
                        "kernel command line (advisory GHSA-xrv8-2pf5-f3q7); install aws-nitro-tpm-tools >= 1.1.0"
                        % TOOL_NAME)
    result = {meas.HASH_ALGORITHM_KEY: meas.HASH_ALGORITHM}
    for key in meas.REFERENCE_PCRS:
        value = measurements.get(key)
        if not meas.is_pcr_value(value):
            raise ToolError("%s printed %s = %r, expected 96 hex characters" % (TOOL_NAME, key, value))
        result[key] = value.lower()
    return meas.validate(result)


def parse_version(text):
    """(major, minor, patch) from an rpm VERSION such as '1.1.1', or None."""
    match = _VERSION.match(text.strip())
    if not match:
        return None
    parts = [int(p) for p in match.group(1).split(".")]
    return tuple((parts + [0, 0])[:3])


def installed_version():
    """The rpm version string of aws-nitro-tpm-tools, or None when rpm is absent or does not know the package."""
    rpm = shutil.which("rpm")
    if not rpm:
        return None
    try:
        proc = processes.run([rpm, "-q", "--qf", "%{VERSION}", PACKAGE], text=True, timeout=120)
    except processes.ProcessError:
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def run(images, pk=None, kek=None, db=None, dbx=None, tool_path=None, timeout=600):
    """Run the tool; returns {"measurements", "tool", "version", "argv"}. Raises ToolError."""
    tool = find(tool_path)
    if tool is None:
        raise ToolError("%s is not installed (not on PATH; on AL2023: dnf install %s, version >= 1.1.0), "
                        "or give its path in tool_path; engine=python computes without it" % (TOOL_NAME, PACKAGE))
    version = installed_version()
    if version is not None:
        parsed = parse_version(version)
        if parsed is not None and parsed < MINIMUM_VERSION:
            raise ToolError("%s %s is older than 1.1.0 and reports no PCR12; install %s >= 1.1.0"
                            % (PACKAGE, version, PACKAGE))
    argv = command(tool, images, pk=pk, kek=kek, db=db, dbx=dbx)
    try:
        proc = processes.run(argv, text=True, timeout=timeout)
    except processes.ProcessError as exc:
        raise ToolError("%s could not run: %s" % (TOOL_NAME, exc))
    if proc.returncode != 0:
        raise ToolError("%s failed (exit %d): %s" % (TOOL_NAME, proc.returncode,
                                                     (proc.stderr or proc.stdout).strip()[-2000:]))
    return {"measurements": parse_output(proc.stdout), "tool": tool, "version": version, "argv": argv}
