# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""KIWI schema versions: which one a description declares, which one the installed KIWI reads, and which KIWI
release first read each version. Plain Python 3.9+, no Ansible and no KIWI imports.

KIWI upgrades a description written for an older schema (its XSLT stylesheets convert 7.4 -> 7.5 -> ... ->
the current one) but not a newer one: a newer `schemaversion` ends in a RelaxNG error about the attribute's
value, which does not say that the KIWI is too old. check_schema_version() says it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from xml.etree import ElementTree

# First KIWI NG release whose schema (kiwi/schema/kiwi.rnc) is each version, read from KIWI's git history
# (the release tags of github.com/OSInside/kiwi).
FIRST_KIWI_FOR_SCHEMA = (
    ("6.5", "9.0.0"),
    ("6.6", "9.9.6"),
    ("6.7", "9.10.2"),
    ("6.8", "9.12.0"),
    ("6.9", "9.14.0"),
    ("7.0", "9.17.36"),
    ("7.1", "9.17.38"),
    ("7.2", "9.20.13"),
    ("7.3", "9.21.10"),
    ("7.4", "9.23.21"),
    ("7.5", "9.24.29"),
    ("7.6", "9.25.0"),
    ("8.0", "10.0.1"),
    ("8.1", "10.0.5"),
    ("8.2", "10.0.28"),
    ("8.3", "10.2.7"),
    ("8.4", "10.2.34"),
    ("8.5", "10.3.5"),
)

# Attributes an attestable description uses that KIWI added within a schema version (without raising it), with
# the first release that knows each (KIWI's git history): a description declaring the schema version can still
# be too new for an older KIWI of that version.
FIRST_KIWI_FOR_ATTRIBUTE = {
    "eficsm": "10.0.24",
    "architectures": "10.1.7",
    "erofscompression": "10.1.11",
    "overlayroot_readonly_filesystem": "10.2.21",
    "uefi": "10.2.23",
}
_NOT_ALLOWED = re.compile(r'attribute "(?P<name>[A-Za-z_]+)" not allowed')

_SCHEMA_VALUE = re.compile(r'<attribute\s+name="schemaversion"\s*>.*?<value>\s*([0-9]+(?:\.[0-9]+)*)\s*</value>',
                           re.DOTALL)
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SchemaVersionError(ValueError):
    """The description's schema version cannot be read, or the installed KIWI cannot read it."""


def version_tuple(text):
    return tuple(int(part) for part in str(text).split("."))


def declared_schema_version(config_file):
    """The schemaversion attribute of a KIWI file's <image> element (None when absent)."""
    try:
        root = ElementTree.parse(config_file).getroot()
    except ElementTree.ParseError as exc:
        raise SchemaVersionError("%s is not well-formed XML: %s" % (config_file, exc))
    except (IOError, OSError) as exc:
        raise SchemaVersionError("%s cannot be read: %s" % (config_file, exc))
    value = root.get("schemaversion")
    if value is not None and not _VERSION.match(value.strip()):
        raise SchemaVersionError('%s: <image schemaversion="%s"> is not a version such as 8.5' % (config_file, value))
    return value.strip() if value is not None else None


def kiwi_schema_version(schema_file):
    """The schema version a KIWI reads, from its RelaxNG schema (kiwi/schema/kiwi.rng): e.g. '8.5'."""
    with open(schema_file) as handle:
        match = _SCHEMA_VALUE.search(handle.read())
    return match.group(1) if match else None


def first_kiwi_for(schema_version):
    """The first KIWI release that reads schema_version, or None when this table does not know it."""
    for schema, release in FIRST_KIWI_FOR_SCHEMA:
        if schema == schema_version:
            return release
    return None


def check_schema_version(config_file, declared, supported, kiwi_version):
    """Raise SchemaVersionError when the description is written for a newer schema than the KIWI reads."""
    if not declared or not supported or version_tuple(declared) <= version_tuple(supported):
        return
    needed = first_kiwi_for(declared)
    if needed:
        need = "KIWI %s or newer" % needed
    else:
        need = "a KIWI newer than %s (this check knows schema versions up to %s)" % (
            FIRST_KIWI_FOR_SCHEMA[-1][1], FIRST_KIWI_FOR_SCHEMA[-1][0])
    raise SchemaVersionError(
        '%s declares schemaversion="%s", but the installed KIWI %s reads schema versions up to %s (it upgrades '
        "older descriptions, not newer ones): install %s where the description is validated and built, or write "
        'the description for schemaversion="%s"' % (config_file, declared, kiwi_version, supported, need, supported))


def attribute_hint(message, kiwi_version):
    """A RelaxNG message about an attribute the installed KIWI is too old for, with the KIWI release needed."""
    match = _NOT_ALLOWED.search(message)
    if not match or not kiwi_version:
        return message
    needed = FIRST_KIWI_FOR_ATTRIBUTE.get(match.group("name"))
    try:
        too_old = needed and version_tuple(kiwi_version) < version_tuple(needed)
    except ValueError:
        return message
    if not too_old:
        return message
    return "%s (the attribute needs KIWI %s or newer; installed: %s)" % (message, needed, kiwi_version)
