# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_findings, operator access the rendered-description check used to miss (issue 11): units enabled by config.sh
lines other than `systemctl enable` (add-wants, reenable, a link into *.wants/), users with a password and a login
shell, and further access packages (Debian's ssh metapackage, browser shells, remote desktops, config agents)."""
import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import findings as kf

GOOD_CMDLINE = "console=ttyS0 rd.shell=0 systemd.getty_auto=false rd.kiwi.verity_options=panic-on-corruption"


def summary(packages=(), users=()):
    return {"build_type": {"kernelcmdline": GOOD_CMDLINE},
            "repositories": [{"alias": "debian", "type": "apt-deb", "source": "https://deb.debian.org/debian",
                              "repository_gpgcheck": True, "package_gpgcheck": True}],
            "packages": list(packages), "bootstrap_packages": [], "ignored_packages": [], "deleted_packages": [],
            "users": list(users)}


def unattestable(found):
    return [f for f in found if f["severity"] == kf.UNATTESTABLE]


@pytest.mark.parametrize("line, unit", [
    ("systemctl add-wants multi-user.target ssh.service", "ssh.service"),
    ("systemctl --root=/ add-requires multi-user.target amazon-ssm-agent.service", "amazon-ssm-agent.service"),
    ("systemctl reenable serial-getty@ttyS0.service", "serial-getty@ttyS0.service"),
    ("ln -s /lib/systemd/system/ssh.service /etc/systemd/system/multi-user.target.wants/ssh.service", "ssh.service"),
    ("ln -sf /usr/lib/systemd/system/serial-getty@.service /etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
     "serial-getty@ttyS0.service"),
    ("ln -s /lib/systemd/system/debug-shell.service /etc/systemd/system/sysinit.target.wants/", "debug-shell.service"),
    ("(cd /etc && systemctl enable --now shellinabox.service)", "shellinabox.service"),
])
def test_script_lines_that_enable_access_units(tmp_path, line, unit):
    (tmp_path / "config.sh").write_text("#!/bin/bash\nset -e\n(\n%s\n)\n" % line)
    found = unattestable(kf.overlay_and_script_findings(str(tmp_path)))
    assert len(found) == 1 and unit in found[0]["reason"], found
    assert found[0]["setting"] == "config.sh"


@pytest.mark.parametrize("line", [
    "systemctl mask ssh.service ssh.socket getty.target",
    "systemctl disable serial-getty@ttyS0.service",
    "systemctl add-wants multi-user.target ci-runner.service",
    "ln -sf /opt/ci-runner/bin/ci-runner /usr/local/bin/ci-runner",
    "ln -s /lib/systemd/system/chrony.service /etc/systemd/system/multi-user.target.wants/chrony.service",
])
def test_lines_that_open_nothing(tmp_path, line):
    (tmp_path / "config.sh").write_text("#!/bin/bash\n%s\n" % line)
    assert kf.overlay_and_script_findings(str(tmp_path)) == []


@pytest.mark.parametrize("user, severity", [
    ({"name": "ops", "password_set": True, "shell": "/bin/bash"}, kf.UNATTESTABLE),
    ({"name": "root", "password_set": True, "shell": None}, kf.UNATTESTABLE),  # useradd's default shell
    ({"name": "svc", "password_set": True, "shell": "/usr/sbin/nologin"}, kf.WARNING),
    ({"name": "svc", "password_set": True, "shell": "/bin/false"}, kf.WARNING),
    ({"name": "old", "password_set": True}, kf.WARNING),  # a summary that does not say which shell
    ({"name": "ci", "password_set": False, "shell": "/bin/bash"}, None),
])
def test_users_with_a_password_and_a_login_shell(user, severity):
    found = kf.description_findings(summary(users=[user]))
    assert [f["severity"] for f in found] == ([severity] if severity else []), found
    if severity == kf.UNATTESTABLE:
        assert "login shell" in found[0]["reason"] and found[0]["value"] == user["name"]


@pytest.mark.parametrize("package", ["ssh", "dropbear-run", "shellinabox", "ttyd", "xrdp", "x11vnc", "salt-minion"])
def test_further_operator_access_packages(package):
    found = unattestable(kf.description_findings(summary(packages=["systemd", package])))
    assert [(f["setting"], f["value"]) for f in found] == [("packages", package)]
