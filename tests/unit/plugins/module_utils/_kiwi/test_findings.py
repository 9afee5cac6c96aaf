# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_findings: what kiwi_validate flags on its own (kernel arguments, repositories, operator access), from a
description summary and directory. No KIWI needed: the summaries are what kiwi_description.summarize returns."""
import os

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import findings as kf

GOOD_CMDLINE = "console=ttyS0 rd.shell=0 systemd.getty_auto=false rd.kiwi.verity_options=panic-on-corruption"


def summary(cmdline=GOOD_CMDLINE, repositories=None, packages=(), ignored=(), users=()):
    return {
        "build_type": {"kernelcmdline": cmdline},
        "repositories": repositories if repositories is not None else [
            {"alias": "al2023", "type": "rpm-md", "source": "https://cdn.amazonlinux.com/al2023/core/mirrors/x",
             "repository_gpgcheck": False, "package_gpgcheck": True}],
        "packages": list(packages), "bootstrap_packages": [], "ignored_packages": list(ignored),
        "deleted_packages": [], "users": list(users),
    }


def unattestable(found):
    return [f for f in found if f["severity"] == kf.UNATTESTABLE]


def test_the_role_s_settings_have_no_findings():
    assert kf.description_findings(summary()) == []


@pytest.mark.parametrize("arg, words", [
    ("rd.break", "shell in the initrd"),
    ("rd.break=pre-mount", "shell in the initrd"),
    ("init=/bin/sh", "PID 1"),
    ("rdinit=/bin/sh", "PID 1"),
    ("systemd.debug_shell", "debug shell"),
    ("systemd.debug-shell=1", "debug shell"),
    ("systemd.unit=emergency.target", "rescue/emergency"),
    ("rd.systemd.unit=rescue.target", "rescue/emergency"),
    ("single", "rescue/emergency"),
    ("rd.debug", "debug mode"),
    ("rd.kiwi.debug", "debug mode"),
])
def test_shell_opening_kernel_args_are_unattestable(arg, words):
    found = unattestable(kf.description_findings(summary(GOOD_CMDLINE + " " + arg)))
    assert len(found) == 1, found
    assert found[0]["setting"] == "kernelcmdline" and found[0]["value"] == arg and words in found[0]["reason"]


@pytest.mark.parametrize("harmless", ["systemd.debug_shell=0", "rd.debug=0", "systemd.unit=multi-user.target",
                                      "quiet", "console=tty0"])
def test_harmless_lookalikes_are_not_flagged(harmless):
    assert kf.description_findings(summary(GOOD_CMDLINE + " " + harmless)) == []


@pytest.mark.parametrize("options, bad", [
    ("ignore-corruption", "ignore-corruption"),
    ("ignore_corruption", "ignore_corruption"),
    ("restart-on-corruption", "restart-on-corruption"),
    ("panic-on-corruption,check-at-most-once", "check-at-most-once"),
    ("panic-on-corruption,ignore-corruption", "ignore-corruption"),
    ("panic-on-corruption;sh", "panic-on-corruption;sh"),
])
def test_verity_options_other_than_panic_are_unattestable(options, bad):
    found = unattestable(kf.kernel_arg_findings(["rd.kiwi.verity_options=" + options]))
    assert len(found) == 1 and repr(bad) in found[0]["reason"], found


def test_verity_shell_syntax_is_named_as_such():
    found = kf.kernel_arg_findings(["rd.kiwi.verity_options=panic-on-corruption$(reboot)"])
    assert "eval" in found[0]["reason"]


def test_ignore_zero_blocks_keeps_the_guarantee():
    assert kf.kernel_arg_findings(["rd.kiwi.verity_options=panic-on-corruption,ignore-zero-blocks"]) == []


@pytest.mark.parametrize("args, flagged", [
    (["rd.shell=1"], True),
    (["rd.shell"], True),
    (["rd.shell=0"], False),
    (["rd.shell=1", "rd.shell=0"], False),  # dracut takes the last occurrence
    (["rd.shell=0", "rd.shell"], True),
])
def test_rd_shell_in_an_overlay_cmdline(args, flagged):
    found = kf.kernel_arg_findings(args, setting="root/etc/cmdline.d/x.conf")
    assert bool(found) is flagged, found


def test_overlay_files_that_add_kernel_args_are_read(tmp_path):
    (tmp_path / "root" / "etc" / "cmdline.d").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "cmdline.d" / "debug.conf").write_text("rd.break=initqueue\n")
    (tmp_path / "root" / "etc" / "dracut.conf.d").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "dracut.conf.d" / "50-x.conf").write_text('kernel_cmdline="init=/bin/bash"\n')
    found = unattestable(kf.description_findings(summary(), str(tmp_path)))
    assert {(f["setting"], f["value"]) for f in found} == {
        (os.path.join("root", "etc", "cmdline.d", "debug.conf"), "rd.break=initqueue"),
        (os.path.join("root", "etc", "dracut.conf.d", "50-x.conf"), "init=/bin/bash")}


def test_console_getty_is_a_warning():
    found = kf.description_findings(summary("console=ttyS0 rd.shell=0 rd.kiwi.verity_options=panic-on-corruption"))
    assert [(f["severity"], "getty" in f["reason"]) for f in found] == [(kf.WARNING, True)]


def repo(source, type_="rpm-md", package=None, repository=None):
    return {"alias": "r", "type": type_, "source": source, "package_gpgcheck": package,
            "repository_gpgcheck": repository}


@pytest.mark.parametrize("repository, severities", [
    (repo("https://example.com/r", package=True), []),
    (repo("https://example.com/r", repository=True), []),
    (repo("https://example.com/r", package=False), ["unattestable"]),
    (repo("https://example.com/r"), ["unattestable"]),  # KIWI writes gpgcheck=0 when neither is set
    (repo("http://example.com/r", package=False), ["unattestable", "unattestable"]),
    (repo("http://example.com/r", package=True), ["warning"]),
    (repo("ftp://example.com/r", package=True), ["warning"]),
    (repo("obs://Virtualization:Appliances/Fedora", package=True), []),
    (repo("dir:///srv/repo", package=False), ["warning"]),
    (repo("dir:///srv/repo", package=True), []),
    (repo("https://deb.debian.org/debian", "apt-deb"), []),
    (repo("https://deb.debian.org/debian", "apt-deb", repository=False), ["unattestable"]),
    (repo("http://deb.debian.org/debian", "apt-deb"), ["warning"]),
    (repo("http://deb.debian.org/debian", "apt-deb", repository=False), ["unattestable", "unattestable"]),
])
def test_repositories(repository, severities):
    found = kf.repository_findings([repository])
    assert sorted(f["severity"] for f in found) == sorted(severities), found
    for item in found:
        assert item["setting"].startswith("repository[r]")


@pytest.mark.parametrize("package", ["openssh-server", "amazon-ssm-agent", "ec2-instance-connect", "cloud-init"])
def test_operator_access_packages_unless_ignored(package):
    found = unattestable(kf.description_findings(summary(packages=["kernel", package])))
    assert [(f["setting"], f["value"]) for f in found] == [("packages", package)]
    assert "operator access" in found[0]["reason"]
    assert kf.description_findings(summary(packages=["kernel", package], ignored=[package])) == []


def test_login_password_is_a_warning():
    found = kf.description_findings(summary(users=[{"name": "ops", "password_set": True},
                                                   {"name": "svc", "password_set": False}]))
    assert [(f["value"], f["severity"]) for f in found] == [("ops", kf.WARNING)]


def test_units_enabled_by_overlay_presets_and_scripts(tmp_path):
    wants = tmp_path / "root" / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/sshd.service", str(wants / "sshd.service"))
    (wants / "chronyd.service").write_text("")
    getty = tmp_path / "root" / "etc" / "systemd" / "system" / "getty.target.wants"
    getty.mkdir()
    os.symlink("/usr/lib/systemd/system/serial-getty@.service", str(getty / "serial-getty@ttyS0.service"))
    presets = tmp_path / "root" / "usr" / "lib" / "systemd" / "system-preset"
    presets.mkdir(parents=True)
    (presets / "90-ops.preset").write_text("enable amazon-ssm-agent.service\nenable chronyd.service\n")
    (tmp_path / "config.sh").write_text("#!/bin/bash\nsystemctl enable --now debug-shell.service\n"
                                        "systemctl mask sshd.service\nsystemctl enable chronyd\n"
                                        "baseInsertService sshd\n")
    found = unattestable(kf.overlay_and_script_findings(str(tmp_path)))
    reasons = sorted(f["reason"] for f in found)
    assert len(found) == 5, reasons
    assert any("sshd.service" in r for r in reasons) and any("serial-getty@ttyS0" in r for r in reasons)
    assert any("amazon-ssm-agent" in r for r in reasons) and any("debug-shell" in r for r in reasons)
    assert any("enables sshd" in r for r in reasons)
    assert not any("chronyd" in r for r in reasons)
