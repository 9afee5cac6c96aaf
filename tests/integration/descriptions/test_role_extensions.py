"""The image_description role's extension points (issue 11 §2), rendered for real and read back: directory trees in
the overlay (they used to be copied and then emptied by the stale-file clean-up), operator access (refused unless
image_description_allow_operator_access, and then the result says attestable: false), and each new input's bad
values refused before anything is written. KIWI's loader validates every rendering (the role runs kiwi_validate)."""
import json
import os
import shutil
import stat

import pytest

import playbook_runner

pytest.importorskip("kiwi")

ROLE_PLAYBOOK = """
- name: Render a description
  hosts: localhost
  gather_facts: false
  roles:
    - role: attestable.ami.image_description
  tasks:
    - name: Report the rendering
      ansible.builtin.debug:
        var: image_description_result
"""


def render(tmp_path, **variables):
    """Run the role with image_description_<key> variables; returns (proc, results, data)."""
    extra = dict(("image_description_" + key, value) for key, value in variables.items())
    extra.setdefault("image_description_dest", str(tmp_path / "description"))
    return playbook_runner.run(ROLE_PLAYBOOK, tmp_path, extra_vars=extra)


def failure_message(data):
    return json.dumps([r.get("msg") for play in data.get("plays", []) for task in play["tasks"]
                       for r in task["hosts"].values() if r.get("failed")])


def warnings_of(data):
    found = []
    for play in data.get("plays", []):
        for task in play["tasks"]:
            for result in task["hosts"].values():
                found += result.get("warnings") or []
                if "WARNING" in str(result.get("msg", "")):
                    found.append(result["msg"])
    return found


def tree(tmp_path):
    source = tmp_path / "src" / "tool"
    (source / "bin").mkdir(parents=True)
    (source / "share" / "doc").mkdir(parents=True)
    (source / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(str(source / "bin" / "tool"), 0o755)
    (source / "share" / "doc" / "README").write_text("the tool\n")
    (source / ".hidden").write_text("dot file\n")
    return source


def test_a_directory_in_the_overlay_is_copied_recursively_and_kept(tmp_path):
    """The bug: src a directory was copied, then emptied by "remove overlay files no input asks for" (rc 0)."""
    source = tree(tmp_path)
    dest = tmp_path / "description"
    overlay = [{"src": str(source), "dest": "/opt/tool"}]
    for attempt in (1, 2):  # the second rendering must neither remove nor change anything
        proc, _results, data = render(tmp_path, overlay_files=overlay)
        assert proc.returncode == 0, proc.stdout[-4000:]
        root = dest / "root" / "opt" / "tool"
        assert (root / "bin" / "tool").read_text() == "#!/bin/sh\necho tool\n", attempt
        assert (root / "share" / "doc" / "README").read_text() == "the tool\n"
        assert (root / ".hidden").read_text() == "dot file\n"
        assert stat.S_IMODE(os.stat(str(root / "bin" / "tool")).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(str(root / "share" / "doc" / "README")).st_mode) == 0o644
        if attempt == 2:
            assert all(stats["changed"] == 0 for stats in data["stats"].values()), data["stats"]
    # A file that left the source tree leaves the overlay too; the rest stays.
    os.remove(str(source / "share" / "doc" / "README"))
    proc, _results, _data = render(tmp_path, overlay_files=overlay)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not (dest / "root" / "opt" / "tool" / "share" / "doc" / "README").exists()
    assert (dest / "root" / "opt" / "tool" / "bin" / "tool").exists()


OPERATOR_ACCESS = {
    "openssh-server added": ({"packages_add": ["openssh-server"]}, "openssh-server"),
    "openssh-server added, debian": ({"distribution": "debian", "packages_add": ["openssh-server"]}, "openssh-server"),
    "ssm agent in the bootstrap": ({"bootstrap_packages_add": ["amazon-ssm-agent"]}, "amazon-ssm-agent"),
    "ssh enabled": ({"systemd_units": ["set-hostname-imds.service", "sshd.service"]}, "sshd.service"),
    "console getty enabled": ({"systemd_units": ["serial-getty@ttyS0.service"]}, "serial-getty@ttyS0.service"),
    "sshd enabled by a config.sh fragment": (
        {"config_fragments": [{"name": "ops", "content": "systemctl enable ssh.service\n"}]}, "ssh.service"),
    "a getty linked by a config.sh fragment": (
        {"config_fragments": [{"name": "console", "content":
                               "ln -s /usr/lib/systemd/system/serial-getty@.service "
                               "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service\n"}]},
        "serial-getty@ttyS0.service"),
    "a user with a password and a shell": (
        {"users": [{"name": "ops", "shell": "/bin/bash", "password_hash": "$6$salt$" + "x" * 86}]}, "ops"),
    "openssh-server dropped from the ignore list": (
        {"packages_ignore_defaults": ["cloud-init", "amazon-ssm-agent"]}, "openssh-server"),
}


@pytest.mark.parametrize("case", sorted(OPERATOR_ACCESS))
def test_operator_access_is_refused_without_consent(case, tmp_path):
    variables, named = OPERATOR_ACCESS[case]
    for validate in (True, False):  # the role's own check, not only KIWI's validation afterwards
        proc, _results, data = render(tmp_path, validate=validate, **variables)
        assert proc.returncode != 0, (case, validate)
        message = failure_message(data)
        assert named in message and "image_description_allow_operator_access" in message, (case, message)
        assert "operator access" in message
        assert not (tmp_path / "description").exists(), "refused after writing"


@pytest.mark.parametrize("case", ["openssh-server added", "sshd enabled by a config.sh fragment",
                                  "a user with a password and a shell"])
def test_allowed_operator_access_warns_and_is_not_attestable(case, tmp_path):
    variables, named = OPERATOR_ACCESS[case]
    proc, results, data = render(tmp_path, allow_operator_access=True, **variables)
    assert proc.returncode == 0, proc.stdout[-4000:]
    record = results["Report the rendering"][-1]["image_description_result"]
    assert record["attestable"] is False
    assert any(named in item for item in record["operator_access"]), record
    warned = warnings_of(data)
    assert any("operator access" in w and named in w for w in warned), warned
    assert "NOT attestable" in (tmp_path / "description" / "appliance.kiwi").read_text()


def test_masking_access_units_is_not_access(tmp_path):
    proc, results, _data = render(tmp_path, distribution="debian",
                                  systemd_units_mask=["ssh.service", "ssh.socket", "getty.target"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert results["Report the rendering"][-1]["image_description_result"]["attestable"] is True
    config = (tmp_path / "description" / "config.sh").read_text()
    assert "systemctl mask ssh.service" in config and "systemctl mask getty.target" in config


REFUSED = {
    "plain password": ({"users": [{"name": "ops", "password_hash": "hunter2"}]}, ["password_hash", "ops"]),
    "bad user name": ({"users": [{"name": "Ops Team"}]}, ["image_description_users", "Ops Team"]),
    "unit without a suffix": ({"systemd_units_mask": ["ssh"]}, ["image_description_systemd_units", "ssh"]),
    "bad preset line": ({"systemd_presets": ["turn-on chronyd.service"]}, ["image_description_systemd_presets"]),
    "fragment with content and template": (
        {"config_fragments": [{"name": "x", "content": "true", "template": "/etc/hostname"}]},
        ["image_description_config_fragments", "exactly one"]),
    "hook step template missing": ({"edit_boot_steps": [{"name": "sign", "template": "/nonexistent/sign.sh"}]},
                                   ["image_description_edit_boot_steps", "/nonexistent/sign.sh"]),
    "extra file over appliance.kiwi": ({"extra_files": [{"src": "/etc/hostname", "dest": "appliance.kiwi"}]},
                                       ["image_description_extra_files", "appliance.kiwi"]),
    "extra file climbing out": ({"extra_files": [{"src": "/etc/hostname", "dest": "../x"}]},
                                ["image_description_extra_files", "../x"]),
    "overlay source missing": ({"overlay_files": [{"src": "/nonexistent/tree", "dest": "/opt/x"}]},
                               ["src does not exist", "/nonexistent/tree"]),
    "overlay owner with a space": ({"overlay_files": [{"src": "/etc/hostname", "dest": "/etc/x", "owner": "a b"}]},
                                   ["owner and group", "a b"]),
    "overlay mode not octal": ({"overlay_files": [{"src": "/etc/hostname", "dest": "/etc/x", "mode": "rw-r--r--"}]},
                               ["mode", "rw-r--r--"]),
    "boot loader through the type escape hatch": ({"type_xml": '<bootloader name="grub2" timeout="5"/>'},
                                                  ["image_description_type_xml", "bootloader",
                                                   "image_description_allow_unattestable"]),
    "second type through the preferences escape hatch": ({"preferences_xml": '<type image="tbz"/>'},
                                                         ["image_description_preferences_xml", "type",
                                                          "image_description_allow_unattestable"]),
    "squashfs read-only root": ({"readonly_filesystem": "squashfs"},
                                ["image_description_readonly_filesystem: squashfs", "image_description_allow_unattestable"]),
    "debian without a hostname unit to enable": ({"distribution": "debian", "own_hostname_unit": False},
                                                 ["image_description_own_hostname_unit", "set-hostname-imds.service"]),
    "root filesystem not offered": ({"filesystem": "zfs"}, ["image_description_filesystem", "zfs"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_extension_input_is_refused_before_anything_is_written(case, tmp_path):
    variables, expected = REFUSED[case]
    proc, _results, data = render(tmp_path, **variables)
    assert proc.returncode != 0, case
    message = failure_message(data)
    for part in expected:
        assert part in message, (part, message)
    assert "Traceback" not in message
    assert not (tmp_path / "description").exists()


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """One rendering per extension point (al2023 unless said), all in one playbook run."""
    tmp_path = tmp_path_factory.mktemp("extended")
    customize = tmp_path / "add-key.sh"
    customize.write_text("#!/bin/bash\necho gpgkey=file:///etc/pki/rpm-gpg/extra.asc >> \"$1\"\n")
    key = tmp_path / "extra.asc"
    key.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n")
    step = tmp_path / "step.sh.j2"
    step.write_text("echo 'signing for {{ image_description_architecture }}' >&2\n")
    hosts = {
        "repositories": {
            "repositories": [{"alias": "extras", "url": "https://example.invalid/extras/metalink", "sourcetype": "metalink",
                              "gpgkeys": ["this://extra.asc", "https://example.invalid/extras.asc"],
                              "repository_gpgcheck": True, "priority": 20, "customize": "add-key.sh"}],
            "extra_files": [{"src": str(customize), "dest": "add-key.sh", "mode": "0755"},
                            {"src": str(key), "dest": "extra.asc"}]},
        "bootstrap": {"bootstrap_packages_add": ["tzdata"], "bootstrap_packages_ignore": ["python3"],
                      "packages_ignore_defaults": ["openssh-server", "amazon-ssm-agent", "cloud-init", "cloud-init-cfg-ec2",
                                                   "ec2-instance-connect", "nano"]},
        "units": {"systemd_units": ["set-hostname-imds.service", "chronyd.service"],
                  "systemd_units_disable": ["dnf-makecache.timer"], "systemd_units_mask": ["sshd.service"],
                  "systemd_presets": ["enable chronyd.service", "disable *"], "own_hostname_unit": False},
        "hook-steps": {"edit_boot_steps": [{"name": "first", "content": "test -s \"$uki\"\n"},
                                           {"name": "second", "template": str(step)}]},
        "uki-off": {"uki": False, "allow_unattestable": True},
        "debian-escape-hatch": {"distribution": "debian", "preferences_xml": "<timezone>UTC</timezone>",
                                "filesystem": "xfs"},
        "type-escape-hatch": {"type_xml": '<partitions>\n  <partition name="data" size="100" mountpoint="/data" '
                                          'filesystem="ext4"/>\n</partitions>',
                              "allow_unattestable": True},
    }
    inventory = {}
    for name, variables in hosts.items():
        host = dict(("image_description_" + key, value) for key, value in variables.items())
        host["image_description_dest"] = str(tmp_path / name)
        inventory[name.replace("-", "_")] = host
    proc, results, data = playbook_runner.run(os.path.join(os.path.dirname(os.path.dirname(__file__)), "kiwi",
                                                           "playbooks", "render_all.yml"), tmp_path, inventory=inventory)
    assert proc.returncode == 0, failure_message(data)
    records = dict((r["_host"], r["image_description_result"]) for r in results["Report the rendering"])
    return tmp_path, records


def _summary(path):
    from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd
    return kd.load_description(str(path))


def test_repository_options_and_extra_files(extended):
    import xml.etree.ElementTree as ET
    tmp_path, records = extended
    dest = tmp_path / "repositories"
    repo = ET.parse(str(dest / "appliance.kiwi")).getroot().findall("repository")[1]
    assert (repo.get("alias"), repo.get("sourcetype"), repo.get("priority"), repo.get("customize")) == \
        ("extras", "metalink", "20", "add-key.sh")
    assert repo.get("repository_gpgcheck") == "true" and repo.get("package_gpgcheck") == "true"
    assert [s.get("key") for s in repo.findall("source/signing")] == ["this://extra.asc", "https://example.invalid/extras.asc"]
    assert stat.S_IMODE(os.stat(str(dest / "add-key.sh")).st_mode) == 0o755
    assert (dest / "extra.asc").exists() and records["repositories"]["attestable"] is True
    _summary(dest)  # KIWI reads it, and every file it references (customize script, this:// key) exists


def test_bootstrap_packages_and_the_ignore_list(extended):
    tmp_path, records = extended
    summary = _summary(tmp_path / "bootstrap")
    assert "tzdata" in summary["bootstrap_packages"] and "filesystem" in summary["bootstrap_packages"]
    import xml.etree.ElementTree as ET
    root = ET.parse(str(tmp_path / "bootstrap" / "appliance.kiwi")).getroot()
    assert [i.get("name") for i in root.findall("packages[@type='bootstrap']/ignore")] == ["python3"]
    ignored = set(summary["ignored_packages"])
    assert {"nano", "openssh-server", "grub2-*"} <= ignored and "firewalld" not in ignored
    assert records["bootstrap"]["attestable"] is True


def test_units_presets_and_the_packaged_hostname_unit(extended):
    tmp_path, records = extended
    dest = tmp_path / "units"
    config = (dest / "config.sh").read_text()
    for line in ("systemctl enable set-hostname-imds.service", "systemctl enable chronyd.service",
                 "systemctl disable dnf-makecache.timer", "systemctl mask sshd.service", "systemctl preset chronyd.service"):
        assert line in config, line
    assert "systemctl preset '*'" not in config
    preset = dest / "root" / "etc" / "systemd" / "system-preset" / "50-image-description.preset"
    assert preset.read_text() == "enable chronyd.service\ndisable *\n"
    # AL2023's amazon-ec2-net-utils packages set-hostname-imds.service: the role's own files stay out.
    assert not (dest / "root" / "usr" / "local" / "sbin" / "set-hostname-imds").exists()
    assert not (dest / "root" / "etc" / "systemd" / "system" / "set-hostname-imds.service").exists()
    assert records["units"]["attestable"] is True


def test_hook_steps_run_before_the_boot_file_is_copied_out(extended):
    import subprocess
    tmp_path, _records = extended
    hook = (tmp_path / "hook-steps" / "edit_boot_install.sh").read_text()
    placed = hook.index('cp "$1" "$work/esp/EFI/BOOT/$efi_boot_file"')
    first, second = hook.index('test -s "$uki"'), hook.index("echo 'signing for x86_64' >&2")
    copied_out = hook.index('cp "$work/esp/EFI/BOOT/$efi_boot_file" "$artifact.efi"')
    assert placed < first < second < hook.index("is not an EFI (PE) binary") < copied_out
    assert hook.index("lsinitrd -f etc/veritytab") > copied_out and hook.index("chroot \"$image_root\" /usr/bin/nitro-tpm-pcr-compute") > copied_out
    assert subprocess.run(["bash", "-n", str(tmp_path / "hook-steps" / "edit_boot_install.sh")], check=False).returncode == 0


def test_binutils_belongs_to_the_uki(extended):
    tmp_path, records = extended
    assert "binutils" not in _summary(tmp_path / "uki-off")["packages"]
    assert "binutils" in _summary(tmp_path / "bootstrap")["packages"]
    assert records["uki_off"]["attestable"] is False


def test_escape_hatches(extended):
    import xml.etree.ElementTree as ET
    tmp_path, records = extended
    root = ET.parse(str(tmp_path / "debian-escape-hatch" / "appliance.kiwi")).getroot()
    assert root.find("preferences/timezone").text == "UTC"
    assert root.find("preferences/type").get("filesystem") == "xfs"
    assert records["debian_escape_hatch"]["attestable"] is True  # neither touches the attestation
    root = ET.parse(str(tmp_path / "type-escape-hatch" / "appliance.kiwi")).getroot()
    assert root.find("preferences/type/partitions/partition").get("mountpoint") == "/data"
    _summary(tmp_path / "type-escape-hatch")
    assert records["type_escape_hatch"]["attestable"] is False
    assert any("partitions" in item for item in records["type_escape_hatch"]["switched_off"])


def _snapshot(path):
    found = {}
    for root, _dirs, files in os.walk(str(path)):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, str(path))] = (handle.read(), stat.S_IMODE(os.stat(full).st_mode))
    return found


def test_a_description_folder_of_the_users_own_is_never_rendered_over(tmp_path):
    # The reported data loss: rendering over a user's own folder deleted its root/ files. Now refused, unchanged.
    here = os.path.dirname(os.path.abspath(__file__))
    users = tmp_path / "mine"
    shutil.copytree(os.path.join(here, "..", "..", "descriptions", "enclave", "description"), str(users))
    before = _snapshot(users)
    proc, _results, data = render(tmp_path, dest=str(users))
    assert proc.returncode != 0
    message = failure_message(data)
    assert "not a description this role rendered" in message and str(users) in message
    assert _snapshot(users) == before

    # A directory holding anything else (no appliance.kiwi at all) is refused too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    proc, _results, data = render(tmp_path, dest=str(other))
    assert proc.returncode != 0 and "not a description this role rendered" in failure_message(data)
    assert (other / "notes.txt").read_text() == "keep me\n" and os.listdir(str(other)) == ["notes.txt"]


def test_an_earlier_rendering_is_rendered_again_in_place(tmp_path):
    dest = tmp_path / "description"
    first, _results, _data = render(tmp_path, dest=str(dest))
    assert first.returncode == 0
    (dest / "root" / "stale-file").write_text("left from an earlier rendering\n")
    again, _results, data = render(tmp_path, dest=str(dest))
    assert again.returncode == 0, failure_message(data)
    assert not (dest / "root" / "stale-file").exists()


def test_aarch64_renders_what_arm64_renders(tmp_path):
    # One machine, two names: the description for aarch64 is the arm64 one (only the header names it as given).
    rendered = {}
    for arch in ("arm64", "aarch64"):
        dest = tmp_path / arch
        proc, _results, data = render(tmp_path, architecture=arch, dest=str(dest))
        assert proc.returncode == 0, failure_message(data)
        rendered[arch] = dict((path, content.replace(b"image (%s)" % arch.encode(), b"image (ARCH)"))
                              for path, (content, _mode) in _snapshot(dest).items())
    assert rendered["aarch64"] == rendered["arm64"]
    assert b"/aarch64/mirror.list" in rendered["arm64"]["appliance.kiwi"]
    assert b"efi_boot_file=BOOTAA64.EFI" in rendered["arm64"]["edit_boot_install.sh"]
