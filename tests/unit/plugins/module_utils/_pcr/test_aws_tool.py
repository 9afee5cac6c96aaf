# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running nitro-tpm-pcr-compute and reading its output.

The real tool (aws/NitroTPM-Tools, Rust, AL2023 package aws-nitro-tpm-tools) cannot be built or installed on
these Debian machines, so a small stand-in executable prints the tool's documented output instead; rpm is
stood in for the same way.
"""
import json
import os
import stat
import sys

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._pcr import aws_tool as nitro_tpm_tool
from ansible_collections.attestable.ami.plugins.module_utils._pcr.aws_tool import ToolError

HEX = {"PCR4": "ab" * 48, "PCR7": "cd" * 48, "PCR12": "00" * 48}


def documented_output(**overrides):
    measurements = {"HashAlgorithm": "SHA384"}
    measurements.update(HEX)
    measurements.update(overrides)
    return json.dumps({"Measurements": dict((k, v) for k, v in measurements.items() if v is not None)})


def stand_in(directory, name, stdout, exit_code=0):
    """An executable that records its arguments next to itself and prints ``stdout``."""
    path = os.path.join(str(directory), name)
    with open(path, "w") as handle:
        handle.write("#!%s\nimport json, sys\n" % sys.executable)
        handle.write("json.dump(sys.argv[1:], open(%r, 'w'))\n" % (path + ".argv"))
        handle.write("sys.stdout.write(%r)\nsys.stderr.write('stand-in stderr')\nsys.exit(%d)\n" % (stdout, exit_code))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_parse_documented_output():
    assert nitro_tpm_tool.parse_output(documented_output()) == dict(HEX, HashAlgorithm="SHA384")


def test_uppercase_hex_is_normalised():
    assert nitro_tpm_tool.parse_output(documented_output(PCR4="AB" * 48))["PCR4"] == "ab" * 48


def test_missing_pcr12_is_too_old():
    with pytest.raises(ToolError, match="printed no PCR12: it is older than 1.1.0"):
        nitro_tpm_tool.parse_output(documented_output(PCR12=None))


@pytest.mark.parametrize("stdout,message", [
    ("not json", "not JSON"),
    ("[]", "no 'Measurements'"),
    (json.dumps({"Measurements": {"HashAlgorithm": "SHA384 { ... }"}}), "HashAlgorithm"),
    (documented_output(PCR7="abc"), "PCR7 = 'abc', expected 96 hex"),
])
def test_unexpected_output(stdout, message):
    with pytest.raises(ToolError, match=message):
        nitro_tpm_tool.parse_output(stdout)


def test_command_order():
    argv = nitro_tpm_tool.command("/t", ["a.efi", "b.efi"], pk="pk.esl", db="db.esl")
    assert argv == ["/t", "--image", "a.efi", "--image", "b.efi", "--PK", "pk.esl", "--db", "db.esl"]


@pytest.mark.parametrize("text,version", [("1.1.1", (1, 1, 1)), ("1.0", (1, 0, 0)), ("2\n", (2, 0, 0)),
                                          ("garbage", None)])
def test_parse_version(text, version):
    assert nitro_tpm_tool.parse_version(text) == version


def test_run_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no rpm here: version unknown
    tool = stand_in(tmp_path, "nitro-tpm-pcr-compute", documented_output())
    result = nitro_tpm_tool.run(["x.efi"], pk="pk.esl")
    assert result["tool"] == tool and result["version"] is None
    assert result["measurements"]["PCR7"] == HEX["PCR7"]
    with open(tool + ".argv") as handle:
        assert json.load(handle) == ["--image", "x.efi", "--PK", "pk.esl"]


def test_run_failure_shows_stderr(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    stand_in(tmp_path, "nitro-tpm-pcr-compute", "", exit_code=3)
    with pytest.raises(ToolError, match="failed \\(exit 3\\): stand-in stderr"):
        nitro_tpm_tool.run(["x.efi"])


def test_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nitro_tpm_tool.find() is None
    with pytest.raises(ToolError, match="is not installed"):
        nitro_tpm_tool.run(["x.efi"])


def test_tool_path_must_be_executable(tmp_path):
    path = tmp_path / "tool"
    path.write_text("#!/bin/sh\n")
    with pytest.raises(ToolError, match="not an executable file"):
        nitro_tpm_tool.find(str(path))


def test_old_rpm_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    stand_in(tmp_path, "nitro-tpm-pcr-compute", documented_output())
    stand_in(tmp_path, "rpm", "1.0.2")
    assert nitro_tpm_tool.installed_version() == "1.0.2"
    with pytest.raises(ToolError, match="1.0.2 is older than 1.1.0"):
        nitro_tpm_tool.run(["x.efi"])


def test_new_rpm_version_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    stand_in(tmp_path, "nitro-tpm-pcr-compute", documented_output())
    rpm = stand_in(tmp_path, "rpm", "1.1.1")
    assert nitro_tpm_tool.run(["x.efi"])["version"] == "1.1.1"
    with open(rpm + ".argv") as handle:
        assert json.load(handle) == ["-q", "--qf", "%{VERSION}", "aws-nitro-tpm-tools"]
