# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_description: the description digest, and loading with KIWI's own XMLDescription and runtime checks.

The loading tests use the real KIWI package (and jing when installed); they are skipped where KIWI is not
installed (the Python 3.9 run has only the digest and attestation checks).
"""
import os
import shutil

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
DEBIAN_OEM = os.path.join(ROOT, "tests", "integration", "kiwi", "descriptions", "debian-oem-verity")


@pytest.fixture
def description(tmp_path):
    """A copy of the Debian oem/verity test description (a real, buildable one) with a mirror filled in."""
    dest = tmp_path / "description"
    shutil.copytree(DEBIAN_OEM, str(dest))
    path = dest / "appliance.kiwi"
    path.write_text(path.read_text().replace("@MIRROR@", "http://deb.debian.org/debian"))
    (dest / "config.sh").write_text("#!/bin/bash\ntrue\n")
    (dest / "root" / "etc").mkdir(parents=True)
    (dest / "root" / "etc" / "motd").write_text("hello\n")
    return dest


def edit(description, old, new):
    path = description / "appliance.kiwi"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


# --- digest (no KIWI needed) ---------------------------------------------------------------------------

def test_digest_is_stable_and_covers_every_file(description):
    first = kd.description_digest(str(description))
    assert first.startswith("sha256:") and len(first) == 71
    assert kd.description_digest(str(description)) == first
    (description / "root" / "etc" / "motd").write_text("changed\n")
    assert kd.description_digest(str(description)) != first


def test_digest_sees_renames_modes_and_new_files(description):
    base = kd.description_digest(str(description))
    os.chmod(str(description / "config.sh"), 0o755)
    executable = kd.description_digest(str(description))
    assert executable != base
    os.rename(str(description / "root" / "etc" / "motd"), str(description / "root" / "etc" / "issue"))
    renamed = kd.description_digest(str(description))
    assert renamed not in (base, executable)
    (description / "root" / "etc" / "empty").write_text("")
    assert kd.description_digest(str(description)) != renamed


def test_digest_does_not_depend_on_the_directory_path(description, tmp_path):
    other = tmp_path / "elsewhere"
    shutil.copytree(str(description), str(other))
    assert kd.description_digest(str(other)) == kd.description_digest(str(description))


def test_digest_counts_fifos_and_sockets_without_reading_them(description):
    import socket
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_common"))
    from test_atomic_file import call_without_hanging

    base = kd.description_digest(str(description))
    os.mkfifo(str(description / "root" / "etc" / "initctl"))
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(str(description / "root" / "etc"))  # a relative name: AF_UNIX paths are short
    try:
        sock.bind("agent.sock")
    finally:
        os.chdir(cwd)
    try:
        skipped = []
        with_specials = call_without_hanging(kd.description_digest, str(description), skipped)
    finally:
        sock.close()
    assert with_specials != base, "KIWI copies FIFOs and sockets of root/ into the image: they must count"
    os.remove(str(description / "root" / "etc" / "agent.sock"))
    os.remove(str(description / "root" / "etc" / "initctl"))
    assert kd.description_digest(str(description)) == base
    assert sorted(skipped) == [(os.path.join("root", "etc", "agent.sock"), "socket"),
                               (os.path.join("root", "etc", "initctl"), "FIFO")]


def test_digest_of_missing_description_is_a_clear_error(tmp_path):
    with pytest.raises(kd.DescriptionError, match="does not exist"):
        kd.description_digest(str(tmp_path / "nope"))


def test_find_config_file(description, tmp_path):
    assert kd.find_config_file(str(description)).endswith("appliance.kiwi")
    assert kd.find_config_file(str(description / "appliance.kiwi")).endswith("appliance.kiwi")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(kd.DescriptionError, match="no KIWI file"):
        kd.find_config_file(str(empty))


# --- attestation findings (no KIWI needed) ------------------------------------------------------------------

ATTESTABLE = {
    "build_type": {"overlayroot": True, "overlayroot_readonly_filesystem": "erofs", "verity_blocks": "all",
                   "kernelcmdline": "console=ttyS0 rd.shell=0 rd.kiwi.verity_options=panic-on-corruption"},
    "bootloader": "systemd_boot",
    "dracut_uefi": True,
}


def test_attestable_summary_has_no_findings():
    assert kd.attestation_findings(ATTESTABLE) == []


@pytest.mark.parametrize("change, expected", [
    ({"build_type": dict(ATTESTABLE["build_type"], overlayroot=False)}, "read-only root"),
    ({"build_type": dict(ATTESTABLE["build_type"], overlayroot_readonly_filesystem="squashfs")}, "erofs"),
    ({"build_type": dict(ATTESTABLE["build_type"], verity_blocks="1000")}, "dm-verity"),
    ({"bootloader": "grub2"}, "UKI"),
    ({"dracut_uefi": False}, "UKI"),
    ({"build_type": dict(ATTESTABLE["build_type"], kernelcmdline="rd.shell=0")}, "panic on verity"),
    ({"build_type": dict(ATTESTABLE["build_type"],
                         kernelcmdline="rd.kiwi.verity_options=panic-on-corruption")}, "no shell"),
    ({"build_type": dict(ATTESTABLE["build_type"],
                         kernelcmdline="rd.shell=0 rd.shell rd.kiwi.verity_options=panic-on-corruption")}, "no shell"),
])
def test_each_missing_setting_is_named(change, expected):
    summary = dict(ATTESTABLE, **change)
    findings = kd.attestation_findings(summary)
    assert len(findings) == 1 and expected in findings[0], findings


# --- loading with KIWI --------------------------------------------------------------------------------------

@pytest.fixture
def kiwi():
    """KIWI, when installed and new enough for the test description's schemaversion 8.5 (KIWI >= 10.3.5)."""
    kiwi = pytest.importorskip("kiwi")
    supported = kd.kiwi_schema_version()
    if supported and tuple(int(p) for p in supported.split(".")) < (8, 5):
        pytest.skip("the installed KIWI reads schema versions up to %s; the test description is 8.5" % supported)
    return kiwi


def test_valid_description_loads_with_its_settings(kiwi, description):
    summary = kd.load_description(str(description))
    assert summary["name"] == "debian-oem-verity" and summary["version"] == "1.0.0"
    assert summary["build_type"]["image"] == "oem"
    assert summary["build_type"]["verity_blocks"] == "all"
    assert summary["build_type"]["overlayroot_readonly_filesystem"] == "erofs"
    assert "linux-image-cloud-amd64" in summary["packages"]
    assert summary["repositories"][0]["source"] == "http://deb.debian.org/debian"
    from kiwi.version import __version__

    assert summary["kiwi_version"] == __version__
    assert kd.attestation_findings(summary) == ['missing UKI boot: <bootloader name="systemd_boot"> with '
                                                '<initrd action="setup"><dracut uefi="true"/>']


def test_loading_keeps_kiwi_off_stdout(kiwi, description, capsys):
    kd.load_description(str(description))
    out = capsys.readouterr().out
    assert out == ""  # an Ansible module's stdout must hold only its JSON


def test_unknown_attribute_names_element_attribute_and_setting(kiwi, description):
    if not shutil.which("jing"):
        pytest.skip("jing gives the attribute-level report")
    edit(description, '<bootloader name="grub2" timeout="1"/>', '<bootloader name="grub2" timeout="1" console="serial"/>')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), settings={"image/preferences/type/bootloader": "my_bootloader_var"})
    messages = info.value.messages
    assert any("bootloader[name=grub2]" in m and 'attribute "console" not allowed' in m and "my_bootloader_var" in m
               for m in messages), messages
    assert "schema validation" in str(info.value)


def test_bad_value_is_reported_with_the_attribute(kiwi, description):
    edit(description, 'verity_blocks="all"', 'verity_blocks="everything"')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), settings={"image/preferences/type@verity_blocks": "verity_var"})
    text = " ".join(info.value.messages)
    assert "type[image=oem]" in text, text
    if shutil.which("jing"):
        assert 'value of attribute "verity_blocks" is invalid' in text and "(set by verity_var)" in text, text


def test_schematron_rule_is_reported(kiwi, description):
    """Plain RelaxNG accepts these attributes on any type; KIWI's Schematron rules do not."""
    edit(description, 'image="oem" firmware="bios"', 'image="tbz" firmware="bios"')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), settings={"@verity_blocks": "verity_var"})
    messages = info.value.messages
    assert any("verity_blocks attribute is only available" in m and "verity_var" in m for m in messages), messages
    assert any("overlayroot attribute is only available" in m for m in messages), messages


def test_runtime_check_on_the_description_is_reported(kiwi, description):
    """KIWI's pre-build check: an overlayroot disk needs the kiwi-overlay dracut module package."""
    edit(description, '<package name="kiwi-dracut-overlay"/>', "")
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert "check_dracut_module_for_disk_overlay_in_package_list" in info.value.messages[0]
    assert "kiwi-dracut-overlay" in info.value.messages[0]


def test_broken_xml_is_a_clear_error(kiwi, description):
    (description / "appliance.kiwi").write_text("<image><oops></image>")
    with pytest.raises(kd.DescriptionError, match="cannot be read by KIWI"):
        kd.load_description(str(description))


def test_setting_lookup_prefers_the_most_specific_key():
    settings = {"image/preferences/type": "type_var", "image/preferences/type@erofscompression": "comp_var",
                "@verity_blocks": "verity_var"}
    path = "image/preferences/type[image=oem]"
    assert kd._setting_for(settings, path, "erofscompression") == "comp_var"
    assert kd._setting_for(settings, path, "verity_blocks") == "verity_var"
    assert kd._setting_for(settings, path, "filesystem") == "type_var"
    assert kd._setting_for(settings, "image/packages[type=image]", None) is None


def test_without_jing_lxml_errors_still_name_the_element(kiwi, description, tmp_path, monkeypatch):
    """KIWI asks jing for details; where jing is missing the element path comes from lxml's own RelaxNG log."""
    empty = tmp_path / "no-jing-here"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    edit(description, '<bootloader name="grub2" timeout="1"/>', '<bootloader name="grub2" timeout="1" console="serial"/>')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), settings={"image/preferences/type/bootloader": "my_bootloader_var"})
    assert any("bootloader[name=grub2]" in m and "my_bootloader_var" in m for m in info.value.messages), \
        info.value.messages
