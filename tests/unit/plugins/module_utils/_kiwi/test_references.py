# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_references through kiwi_description.load_description with the real KIWI: every script, archive, file,
this:// repository and signing key the description references must exist, and each missing one is named.
(KIWI itself notices them only while building.) Skipped where KIWI is not installed or too old for the
test description's schema."""
import os
import shutil

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd, references as kiwi_references

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
UEFI = os.path.join(ROOT, "tests", "integration", "kiwi_modules", "descriptions", "uefi-attestable")


@pytest.fixture
def description(tmp_path):
    pytest.importorskip("kiwi")
    supported = kd.kiwi_schema_version()
    if tuple(int(p) for p in supported.split(".")) < (8, 5):
        pytest.skip("this:// signing keys need a KIWI whose schema is 8.5 (installed: %s)" % supported)
    dest = tmp_path / "description"
    shutil.copytree(UEFI, str(dest))
    return dest


def edit(description, old, new):
    path = description / "appliance.kiwi"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_complete_description_lists_its_references(description):
    summary = kd.load_description(str(description))
    refs = {(r["element"], r["path"]): r for r in summary["references"]}
    assert set(refs) == {
        ("<type editbootinstall>", "edit_boot_install.sh"),
        ('<repository alias="debian" customize>', "customize-repo.sh"),
        ('<repository alias="debian" signing key>', "this://keys/debian-archive.gpg"),
        ("<archive name>", "extra-tree.tar.gz"),
    }
    assert all(r["exists"] is True and r["checked"] is True for r in refs.values())


def test_each_missing_reference_is_named(description):
    for name in ("edit_boot_install.sh", "customize-repo.sh", "extra-tree.tar.gz"):
        os.remove(str(description / name))
    shutil.rmtree(str(description / "keys"))
    edit(description, '<archive name="extra-tree.tar.gz"/>',
         '<archive name="extra-tree.tar.gz"/><file name="app.conf" target="/etc/app.conf"/>')
    edit(description, 'editbootinstall="edit_boot_install.sh"',
         'editbootinstall="edit_boot_install.sh" editbootconfig="edit_boot_config.sh"')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert "references files that do not exist" in str(info.value)
    messages = info.value.messages
    assert len(messages) == 6, messages
    for needle in ("<type editbootinstall> edit_boot_install.sh", "<type editbootconfig> edit_boot_config.sh",
                   '<repository alias="debian" customize> customize-repo.sh',
                   '<repository alias="debian" signing key> this://keys/debian-archive.gpg',
                   "<archive name> extra-tree.tar.gz", "<file name> app.conf"):
        assert any(m.startswith(needle) and "no such" in m for m in messages), (needle, messages)


def test_this_repository_directory_must_exist(description):
    edit(description, '<source path="https://deb.debian.org/debian">', '<source path="this://local-repo">')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert any("this://local-repo" in m and "no such directory" in m for m in info.value.messages)
    (description / "local-repo").mkdir()
    kd.load_description(str(description))


def test_relative_file_uri_key_is_refused_with_the_fix(description):
    edit(description, 'key="this://keys/debian-archive.gpg"', 'key="file://keys/debian-archive.gpg"')
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert any("must name an absolute path" in m and "this://keys/debian-archive.gpg" in m
               for m in info.value.messages), info.value.messages


def test_host_paths_are_checked_only_when_asked(description, tmp_path):
    edit(description, 'key="this://keys/debian-archive.gpg"', 'key="file:///etc/pki/rpm-gpg/RPM-GPG-KEY-none"')
    edit(description, 'customize="customize-repo.sh"', 'customize="%s"' % (tmp_path / "elsewhere.sh"))
    summary = kd.load_description(str(description))
    unchecked = [r for r in summary["references"] if r["checked"] is False]
    assert {r["path"] for r in unchecked} == {"file:///etc/pki/rpm-gpg/RPM-GPG-KEY-none",
                                              str(tmp_path / "elsewhere.sh")}
    assert all(r["exists"] is None for r in unchecked)
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), check_host_paths=True)
    assert len(info.value.messages) == 2 and all("on this host" in m for m in info.value.messages)
    (tmp_path / "elsewhere.sh").write_text("true\n")
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description), check_host_paths=True)
    assert len(info.value.messages) == 1 and "RPM-GPG-KEY-none" in info.value.messages[0]


def test_a_config_xml_description_resolves_and_names_its_references(description):
    os.rename(str(description / "appliance.kiwi"), str(description / "config.xml"))
    summary = kd.load_description(str(description))
    assert summary["config_file"] == str(description / "config.xml")
    assert all(r["exists"] is True and r["resolved"].startswith(str(description)) for r in summary["references"])
    os.remove(str(description / "customize-repo.sh"))
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert [m for m in info.value.messages if "customize-repo.sh" in m and "no such file" in m], info.value.messages
    assert "config.xml references files that do not exist" in str(info.value)


def test_a_script_kiwi_would_skip_silently_is_named(description):
    """A dangling config.sh link is no file for KIWI's os.path.exists(): KIWI would build without running it."""
    os.rename(str(description / "config.sh"), str(description / "config.sh.orig"))
    os.symlink("../shared/config.sh", str(description / "config.sh"))
    os.symlink("/nonexistent/disk.sh", str(description / "disk.sh"))
    (description / "images.sh").mkdir()
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    messages = info.value.messages
    assert len(messages) == 3, messages
    assert any(m.startswith("config.sh: a symbolic link to ../shared/config.sh, which does not exist") for m in messages)
    assert any(m.startswith("disk.sh: a symbolic link to /nonexistent/disk.sh") for m in messages)
    assert any(m.startswith("images.sh: not a regular file") for m in messages)
    # A link to a script that exists is what KIWI copies: fine.
    for name in ("config.sh", "disk.sh"):
        os.remove(str(description / name))
    (description / "images.sh").rmdir()
    os.symlink("config.sh.orig", str(description / "config.sh"))
    kd.load_description(str(description))


def test_overlays_kiwi_would_skip_or_fail_on_are_named(description, tmp_path):
    import tarfile

    shutil.rmtree(str(description / "root"))
    os.symlink(str(tmp_path / "gone"), str(description / "root"))
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    assert [m for m in info.value.messages if m.startswith("root/: a symbolic link to")], info.value.messages
    os.remove(str(description / "root"))
    (description / "root").write_text("not a tree\n")
    assert kiwi_references.present_problems(str(description))[0].startswith("root: not a directory")
    os.remove(str(description / "root"))
    # Without root/, KIWI extracts root.tar.gz: it must be a tar archive.
    (description / "root.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    problems = kiwi_references.present_problems(str(description))
    assert len(problems) == 1 and problems[0].startswith("root.tar.gz: not a readable tar archive"), problems
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("hello\n")
    with tarfile.open(str(description / "root.tar.gz"), "w:gz") as archive:
        archive.add(str(tmp_path / "etc"), arcname="etc")
    assert kiwi_references.present_problems(str(description)) == []
    kd.load_description(str(description))
    assert kiwi_references.present_warnings(str(description)) == []
    (description / "root").mkdir()
    assert kiwi_references.present_warnings(str(description)) == [
        "the description has both root/ and root.tar.gz: KIWI copies root/ and ignores root.tar.gz"]


def test_a_profile_overlay_that_is_a_dangling_link_is_named(tmp_path):
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "production"))
    (tmp_path / "staging").mkdir()
    assert kiwi_references.present_problems(str(tmp_path), ["staging"]) == []
    problems = kiwi_references.present_problems(str(tmp_path), ["production", "staging"])
    assert len(problems) == 1 and problems[0].startswith("production/: the overlay of profile production"), problems
