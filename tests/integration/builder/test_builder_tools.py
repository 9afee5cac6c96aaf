# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The build host's tool versions and its connection secrets, with existing mode on this machine (localhost).

This machine is a real build host of the kind the role checks: KIWI from PyPI (the test's PATH), Debian's
erofs-utils, cryptsetup and systemd-boot-efi, and no aws-nitro-tpm-tools (an AL2023 package).
"""
import re
import shutil
import subprocess

import pytest

from test_builder_role import no_traceback, role_task


def existing(run_playbook, builder_playbook, args=(), **overrides):
    # The tools here were not installed by the role (no dnf): builder_check_tool_versions asks for the check.
    extra = {"builder_mode": "existing", "builder_host": "localhost", "builder_install_packages": False,
             "builder_check_tool_versions": True}
    extra.update(overrides)
    return run_playbook(builder_playbook("launch.yml"), extra_vars=extra, args=args)


def deb_version(package):
    if not shutil.which("dpkg-query"):
        return None
    found = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False)
    if found.returncode != 0 or not found.stdout:
        return None
    return re.sub(r"[~+].*$", "", re.sub(r"-[^-]*$", "", re.sub(r"^[0-9]+:", "", found.stdout)))


def as_tuple(version):
    return tuple(int(p) for p in re.findall(r"[0-9]+", version))


def problems(result):
    check = role_task(result, "Check that the build tools are new enough")
    return check.get("msg", "") if check.get("failed") else ""


def test_tool_versions_are_recorded_and_an_old_erofs_utils_stops_the_run(run_playbook, builder_playbook):
    import kiwi.version

    result = existing(run_playbook, builder_playbook)
    versions = role_task(result, "Record the build tools' versions")["ansible_facts"]["builder_tool_versions"]
    assert sorted(versions) == ["aws-nitro-tpm-tools", "cryptsetup", "erofs-utils", "kiwi", "systemd-boot"]
    assert versions["kiwi"] == kiwi.version.__version__
    veritysetup = subprocess.run(["veritysetup", "--version"], capture_output=True, text=True, check=False).stdout
    assert versions["cryptsetup"] == (deb_version("cryptsetup-bin") or veritysetup.split()[1])
    erofs = deb_version("erofs-utils")
    assert versions["erofs-utils"] == erofs
    assert versions["aws-nitro-tpm-tools"] is None

    message = problems(result)
    assert result.rc != 0 and message
    assert "aws-nitro-tpm-tools was not found (1.1.0 or later is needed)" in message
    if erofs and as_tuple(erofs) < (1, 8):
        # "lz4hc,level=12" needs erofs-utils 1.8 (the first with -zX,level=N)
        assert "erofs-utils is %s, 1.8 or later is needed" % erofs in message
    no_traceback(result)


@pytest.mark.parametrize("schema, refused", [("8.5", False), ("99.0", True)])
def test_the_description_schema_must_be_one_the_hosts_kiwi_reads(run_playbook, builder_playbook, schema, refused):
    result = existing(run_playbook, builder_playbook, builder_kiwi_schema_version=schema,
                      builder_tool_min_versions={"kiwi": "10.2.21", "erofs-utils": "1.0"})
    message = problems(result)
    # aws-nitro-tpm-tools is missing here whatever the schema: it is the one other problem.
    assert "aws-nitro-tpm-tools was not found" in message
    assert "erofs-utils" not in message
    assert ("the description has schemaversion 99.0, which KIWI" in message) is refused
    assert role_task(result, "Record the build tools' versions")["ansible_facts"]["builder_resources"][
        "kiwi_schema_version"] == "8.5"


@pytest.mark.parametrize("overrides", [{"builder_check_tool_versions": False}, {}], ids=["switched-off", "default"])
def test_without_the_check_the_versions_are_still_recorded(run_playbook, builder_playbook, overrides):
    # Default: checked only where the role installed the packages (here builder_install_packages is false).
    result = run_playbook(builder_playbook("launch.yml"), extra_vars=dict(
        {"builder_mode": "existing", "builder_host": "localhost", "builder_install_packages": False}, **overrides))
    assert result.rc == 0, result.stdout[-4000:]
    assert role_task(result, "Check that the build tools are new enough").get("skipped") is True
    assert result.task("Show the builder resources")["builder_resources"]["tool_versions"]["kiwi"]


def test_builder_host_vars_never_reach_the_output(run_playbook, builder_playbook):
    secret = "become-pw-5f1c2e9a"
    host_vars = {"ansible_become_password": secret, "builder_test_marker": "marker"}
    # Every task result, as the json callback gives it.
    result = existing(run_playbook, builder_playbook, builder_check_tool_versions=False, builder_host_vars=host_vars)
    assert result.rc == 0, result.stdout[-4000:]
    assert result.task("Show the builder's inventory variables")["msg"]["builder_test_marker"] == "marker"
    assert secret not in result.stdout + result.stderr
    # What the report was about: the default output with -v.
    verbose = run_playbook(builder_playbook("launch.yml"), args=("-v",), env={"ANSIBLE_STDOUT_CALLBACK": "default"},
                           extra_vars={"builder_mode": "existing", "builder_host": "localhost",
                                       "builder_install_packages": False, "builder_check_tool_versions": False,
                                       "builder_host_vars": host_vars})
    assert verbose.rc == 0, verbose.stdout[-4000:]
    assert "builder_test_marker" in verbose.stdout  # the task ran and printed its items' names
    assert secret not in verbose.stdout + verbose.stderr
