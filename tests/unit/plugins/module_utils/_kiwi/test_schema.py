# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiwi_schema: a description written for a newer schema than the installed KIWI reads fails up front, naming
both versions and the KIWI release needed (KIWI upgrades older descriptions, not newer ones).

The KIWI-backed tests run with whatever KIWI this Python has (11.x on the controller's venv; run them with a
Python 3.9 venv holding an older KIWI, e.g. 10.2.33 whose schema is 8.3, to see the builder's case)."""
import os
import shutil

import pytest

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import description as kd
from ansible_collections.attestable.ami.plugins.module_utils._kiwi import schema as ks

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", ".."))
UEFI = os.path.join(ROOT, "tests", "integration", "kiwi_modules", "descriptions", "uefi-attestable")


def test_older_and_equal_schema_pass():
    ks.check_schema_version("a.kiwi", "7.4", "8.5", "11.1.6")
    ks.check_schema_version("a.kiwi", "8.5", "8.5", "11.1.6")
    ks.check_schema_version("a.kiwi", None, "8.5", "11.1.6")


def test_newer_schema_names_both_versions_and_the_kiwi_needed():
    with pytest.raises(ks.SchemaVersionError) as info:
        ks.check_schema_version("/d/appliance.kiwi", "8.5", "8.3", "10.2.33")
    text = str(info.value)
    assert 'schemaversion="8.5"' in text and "KIWI 10.2.33" in text and "up to 8.3" in text
    assert "KIWI 10.3.5 or newer" in text and "/d/appliance.kiwi" in text


def test_versions_compare_as_numbers_not_text():
    with pytest.raises(ks.SchemaVersionError, match="8.10"):
        ks.check_schema_version("a.kiwi", "8.10", "8.5", "11.1.6")
    ks.check_schema_version("a.kiwi", "8.10", "8.10", "12.0.0")


def test_unknown_newer_schema_says_what_is_known():
    with pytest.raises(ks.SchemaVersionError, match="a KIWI newer than 10.3.5"):
        ks.check_schema_version("a.kiwi", "9.0", "8.5", "11.1.6")


def test_first_kiwi_table_is_ordered():
    versions = [ks.version_tuple(schema) for schema, _release in ks.FIRST_KIWI_FOR_SCHEMA]
    releases = [ks.version_tuple(release) for _schema, release in ks.FIRST_KIWI_FOR_SCHEMA]
    assert versions == sorted(versions) and releases == sorted(releases)
    assert ks.first_kiwi_for("8.5") == "10.3.5" and ks.first_kiwi_for("7.5") == "9.24.29"


def test_declared_version_is_read_and_checked(tmp_path):
    path = tmp_path / "a.kiwi"
    path.write_text('<?xml version="1.0"?><image schemaversion="8.3" name="x"/>')
    assert ks.declared_schema_version(str(path)) == "8.3"
    path.write_text('<image schemaversion="eight" name="x"/>')
    with pytest.raises(ks.SchemaVersionError, match="not a version"):
        ks.declared_schema_version(str(path))
    path.write_text("<image")
    with pytest.raises(ks.SchemaVersionError, match="not well-formed"):
        ks.declared_schema_version(str(path))


def test_kiwi_schema_version_from_an_rng(tmp_path):
    rng = tmp_path / "kiwi.rng"
    rng.write_text('<grammar><define name="x"><attribute name="schemaversion">\n  <a:documentation>The allowed '
                   'Schema version (fixed value)</a:documentation>\n  <value>8.3</value>\n</attribute></define>'
                   '</grammar>')
    assert ks.kiwi_schema_version(str(rng)) == "8.3"


# --- with the installed KIWI ----------------------------------------------------------------------------------

@pytest.fixture
def kiwi():
    return pytest.importorskip("kiwi")


@pytest.fixture
def description(tmp_path):
    """The UEFI test description without its this:// signing key, which KIWI's schema allows only from 10.3."""
    dest = tmp_path / "description"
    shutil.copytree(UEFI, str(dest))
    path = dest / "appliance.kiwi"
    text = path.read_text()
    assert '<signing key="this://keys/debian-archive.gpg"/>' in text
    path.write_text(text.replace('<signing key="this://keys/debian-archive.gpg"/>', ""))
    return dest


def set_schema(description, version):
    path = description / "appliance.kiwi"
    text = path.read_text()
    assert 'schemaversion="8.3"' in text
    path.write_text(text.replace('schemaversion="8.3"', 'schemaversion="%s"' % version))


def test_installed_kiwi_reports_its_schema(kiwi, description):
    from kiwi.version import __version__

    supported = kd.kiwi_schema_version()
    assert supported and ks.version_tuple(supported) >= (7, 0)
    summary = kd.load_description(str(description))
    assert summary["schema_version"] == "8.3" and summary["kiwi_schema_version"] == supported
    assert summary["kiwi_version"] == __version__


def test_one_minor_newer_than_the_installed_kiwi_fails_up_front(kiwi, description):
    from kiwi.version import __version__

    supported = kd.kiwi_schema_version()
    major, minor = ks.version_tuple(supported)[:2]
    newer = "%d.%d" % (major, minor + 1)
    set_schema(description, newer)
    with pytest.raises(kd.DescriptionError) as info:
        kd.load_description(str(description))
    text = " ".join(info.value.messages)
    assert 'schemaversion="%s"' % newer in text and "up to %s" % supported in text and __version__ in text
    assert info.value.details == {"kiwi_version": __version__, "schema_version": newer,
                                  "kiwi_schema_version": supported}
    needed = ks.first_kiwi_for(newer)
    assert ("KIWI %s or newer" % needed if needed else "a KIWI newer than") in text


def test_an_older_schema_is_upgraded_by_kiwi(kiwi, description):
    set_schema(description, "7.4")
    summary = kd.load_description(str(description))
    assert summary["schema_version"] == "7.4"


def test_attribute_added_within_a_schema_version_names_the_kiwi_needed():
    message = 'appliance.kiwi <image/preferences/type[image=oem]>: attribute "overlayroot_readonly_filesystem" not allowed'
    assert ks.attribute_hint(message, "10.2.7").endswith("(the attribute needs KIWI 10.2.21 or newer; installed: 10.2.7)")
    assert ks.attribute_hint(message, "11.1.6") == message
    other = 'appliance.kiwi <image>: attribute "bogus" not allowed'
    assert ks.attribute_hint(other, "9.24.61") == other
