"""kiwi_references through kiwi_description.load_description with the real KIWI: every script, archive, file,
this:// repository and signing key the description references must exist, and each missing one is named.
(KIWI itself notices them only while building.) Skipped where KIWI is not installed or too old for the
test description's schema."""
import os
import shutil

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd

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
