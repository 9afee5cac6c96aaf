# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""KIWI image descriptions: find, digest, validate with KIWI's own loader, and check the attestation settings.

Plain Python (3.9+), no Ansible imports. KIWI itself is imported only by load_description(), lazily, so the
digest and the attestation checks also work where KIWI is not installed (the module that builds imports this
file on the builder).

Validation is KIWI's: XMLDescription(file).load() (XSLT upgrade, RelaxNG and the embedded Schematron rules),
then the runtime checks KIWI runs on a description before a build that look at nothing but the description.
KIWI reports its findings only through its logger (and jing, when installed, for RelaxNG details), so this
file captures that log and turns it into messages that name the element and attribute at fault and, when
the caller says which input produced them, the input (a role variable).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import hashlib
import logging
import os
import re
import stat

from ansible_collections.attestable.ami.plugins.module_utils._kiwi import references as kiwi_references, schema as kiwi_schema
from ansible_collections.attestable.ami.plugins.module_utils._kiwi.findings import last_argument as _last_value
from ansible_collections.attestable.ami.plugins.module_utils._common.file_digest import sha256_file

DIGEST_ALGORITHM = "sha256"

# RuntimeChecker methods that only look at the description (never at the host or the network).
DESCRIPTION_RUNTIME_CHECKS = (
    "check_image_version_provided",
    "check_initrd_selection_required",
    "check_volume_setup_defines_reserved_labels",
    "check_volume_setup_defines_multiple_fullsize_volumes",
    "check_volume_setup_has_no_root_definition",
    "check_volume_label_used_with_lvm",
    "check_swap_name_used_with_lvm",
    "check_xen_uniquely_setup_as_server_or_guest",
    "check_checkmedia_used_with_msdos_table",
    "check_dracut_module_for_live_iso_in_package_list",
    "check_dracut_module_for_disk_overlay_in_package_list",
    "check_dracut_module_for_disk_oem_in_package_list",
    "check_dracut_module_for_oem_install_in_package_list",
    "check_image_type_unique",
    "check_luksformat_options_valid",
    "check_partuuid_persistency_type_used_with_mbr",
    "check_efi_fat_image_has_correct_size",
    "check_bootloader_env_compatible_with_loader",
    "check_repositories_configured",
)

# What makes an image attestable, as (key, human description). See attestation_findings().
ATTESTATION_SETTINGS = (
    ("overlayroot", 'a read-only root: <type overlayroot="true">'),
    ("erofs", 'an erofs read-only root filesystem: <type overlayroot_readonly_filesystem="erofs">'),
    ("verity", 'dm-verity over all blocks of the read-only root: <type verity_blocks="all">'),
    ("uki", 'UKI boot: <bootloader name="systemd_boot"> with <initrd action="setup"><dracut uefi="true"/>'),
    ("verity_panic", "panic on verity corruption: rd.kiwi.verity_options=panic-on-corruption in kernelcmdline"),
    ("no_initrd_shell", "no shell in the initrd: rd.shell=0 in kernelcmdline"),
)

_JING_ERROR = re.compile(r"(?:^|\s)(?P<file>/[^\s:]+):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>[^\n]+)")
_QUOTED_ATTRIBUTE = re.compile(r'attribute "(?P<name>[^"]+)"')
_QUOTED_ELEMENT = re.compile(r'element "(?P<name>[^"]+)"')


class DescriptionError(ValueError):
    """The description cannot be read or is invalid; .messages holds one readable line per problem."""

    def __init__(self, summary, messages=None, details=None):
        self.summary = summary
        self.messages = list(messages or [])
        self.details = dict(details or {})
        text = summary
        if self.messages:
            text += ": " + "; ".join(self.messages)
        super(DescriptionError, self).__init__(text)


class KiwiMissingError(RuntimeError):
    """KIWI NG (the `kiwi` Python package) is not importable by this Python."""


def find_config_file(description):
    """The KIWI file of a description: the path itself if it is a file, else config.xml or the first *.kiwi."""
    if os.path.isfile(description):
        return description
    if not os.path.isdir(description):
        raise DescriptionError("description %s does not exist (expected a directory holding appliance.kiwi, "
                               "or the .kiwi file itself)" % description)
    for candidate in (os.path.join(description, "config.xml"), os.path.join(description, "image", "config.xml")):
        if os.path.isfile(candidate):
            return candidate
    matches = sorted(glob.glob(os.path.join(description, "*.kiwi")))
    if matches:
        return matches[0]
    raise DescriptionError("no KIWI file in %s (expected config.xml or a *.kiwi file such as appliance.kiwi)"
                           % description)


def description_digest(description, skipped=None):
    """SHA-256 over every file of the description directory: relative path, mode and content, in path order.

    Symbolic links count by their target text. FIFOs, sockets and device nodes are never opened (reading a FIFO
    blocks until a writer comes): they count by their kind (and a device by its numbers), since KIWI's rsync of
    the root/ overlay copies them into the image; when skipped is a list, they are appended to it as
    (relative path, kind). A single .kiwi file digests as a directory holding just it. Returns "sha256:<hex>".
    """
    if os.path.isfile(description):
        root, names = os.path.dirname(description) or ".", [os.path.basename(description)]
    elif os.path.isdir(description):
        root, names = description, None
    else:
        raise DescriptionError("description %s does not exist" % description)
    entries = []
    if names is None:
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                names.append(os.path.relpath(os.path.join(dirpath, name), root))
    digest = hashlib.sha256()
    for rel in sorted(set(names)):
        path = os.path.join(root, rel)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            kind, content_hash = "l", hashlib.sha256(os.readlink(path).encode("utf-8")).hexdigest()
        elif stat.S_ISREG(info.st_mode):
            kind, content_hash = "f", sha256_file(path)
        else:
            special = _special_kind(info.st_mode)
            if skipped is not None:
                skipped.append((rel, special))
            numbers = "%d:%d" % (os.major(info.st_rdev), os.minor(info.st_rdev)) if special.endswith("device") else ""
            kind, content_hash = "s", hashlib.sha256(("%s %s" % (special, numbers)).encode("utf-8")).hexdigest()
        entries.append((rel, kind, stat.S_IMODE(info.st_mode) & 0o111 and "x" or "-", content_hash))
    for rel, kind, executable, content_hash in entries:
        digest.update(("%s\0%s%s\0%s\n" % (rel.replace(os.sep, "/"), kind, executable, content_hash)).encode("utf-8"))
    return "%s:%s" % (DIGEST_ALGORITHM, digest.hexdigest())


def _special_kind(mode):
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def import_kiwi():
    """Import KIWI's loader pieces, or raise KiwiMissingError with how to install KIWI."""
    try:
        from kiwi.xml_description import XMLDescription  # noqa: F401 pylint: disable=unused-import
        from kiwi.xml_state import XMLState  # noqa: F401 pylint: disable=unused-import
        from kiwi.runtime_checker import RuntimeChecker  # noqa: F401 pylint: disable=unused-import
        from kiwi import exceptions  # noqa: F401 pylint: disable=unused-import
        from kiwi.version import __version__  # noqa: F401 pylint: disable=unused-import
    except ImportError as exc:
        raise KiwiMissingError("KIWI NG is not installed for this Python (%s): install the `kiwi` package "
                               "(pip install kiwi, or dnf install python3-kiwi) on the controller" % exc)
    import kiwi.xml_description
    import kiwi.xml_state
    import kiwi.runtime_checker
    import kiwi.exceptions
    import kiwi.version
    return kiwi


class _CaptureKiwiLog(logging.Handler):
    """Collects KIWI's log records (and keeps them off stdout, which an Ansible module must not write to)."""

    def __init__(self):
        logging.Handler.__init__(self, level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        try:
            self.lines.append((record.levelno, record.getMessage()))
        except Exception:  # pylint: disable=broad-except
            self.lines.append((record.levelno, str(record.msg)))


class _QuietKiwiLogger(object):
    """Context manager: route the 'kiwi' logger into a capture handler only, then restore it."""

    def __enter__(self):
        self.logger = logging.getLogger("kiwi")
        self.saved = (list(self.logger.handlers), self.logger.propagate, self.logger.level)
        self.capture = _CaptureKiwiLog()
        for handler in self.saved[0]:
            self.logger.removeHandler(handler)
        self.logger.addHandler(self.capture)
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        return self.capture

    def __exit__(self, *exc_info):
        self.logger.removeHandler(self.capture)
        handlers, propagate, level = self.saved
        for handler in handlers:
            self.logger.addHandler(handler)
        self.logger.propagate = propagate
        self.logger.setLevel(level)
        return False


def _element_label(tree, element):
    """A readable path of an element, e.g. image/preferences/type[image=oem]/bootloader[name=grub2]."""
    parts = []
    node = element
    while node is not None and isinstance(node.tag, str):
        keys = ["%s=%s" % (key, node.get(key)) for key in ("image", "name", "type", "alias", "action")
                if node.get(key) is not None and not (node.tag == "image" and key == "name")]
        parts.append(node.tag + ("[%s]" % ",".join(keys) if keys else ""))
        node = node.getparent()
    return "/".join(reversed(parts))


def _element_at_line(tree, line):
    """The last element whose start tag begins on or before a line (jing reports the end of a start tag)."""
    found = None
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        if element.sourceline is not None and element.sourceline <= line:
            if found is None or element.sourceline >= found.sourceline:
                found = element
    return found


def _setting_for(settings, element_path, attribute):
    """The caller's input name for an element path and attribute (longest matching prefix wins)."""
    if not settings:
        return None
    plain = re.sub(r"\[[^\]]*\]", "", element_path or "")
    candidates = []
    if attribute:
        candidates.append("%s@%s" % (plain, attribute))
        candidates.append("@%s" % attribute)
    parts = plain.split("/")
    for cut in range(len(parts), 0, -1):
        candidates.append("/".join(parts[:cut]))
    for key in candidates:
        if key in settings:
            return settings[key]
    return None


def _with_setting(message, setting):
    return "%s (set by %s)" % (message, setting) if setting else message


def relaxng_messages(log_lines, transformed_file, config_file, settings=None):
    """Readable RelaxNG findings from jing's report in KIWI's log, located in the (upgraded) description."""
    from lxml import etree

    tree = None
    try:
        tree = etree.parse(transformed_file)
    except Exception:  # pylint: disable=broad-except
        tree = None
    messages = []
    for _level, text in log_lines:
        for match in _JING_ERROR.finditer(text):
            msg = match.group("msg").strip()
            where = "line %s" % match.group("line")
            element_path = None
            if tree is not None:
                element = _element_at_line(tree, int(match.group("line")))
                if element is not None:
                    element_path = _element_label(tree, element)
                    where = "<%s>" % element_path
            attribute = _QUOTED_ATTRIBUTE.search(msg)
            attribute = attribute.group("name") if attribute else None
            if not attribute:
                child = _QUOTED_ELEMENT.search(msg)
                if child and element_path:
                    element_path = element_path + "/" + child.group("name")
            setting = _setting_for(settings, element_path, attribute)
            line = _with_setting("%s %s: %s" % (os.path.basename(config_file), where, msg), setting)
            if line not in messages:
                messages.append(line)
    return messages


def lxml_relaxng_messages(transformed_file, config_file, settings=None):
    """RelaxNG findings from lxml alone (when jing is not installed): coarser, but they name the element."""
    from lxml import etree
    from kiwi.defaults import Defaults

    relaxng = etree.RelaxNG(etree.parse(Defaults.get_schema_file()))
    tree = etree.parse(transformed_file)
    messages = []
    if relaxng.validate(tree):
        return messages
    for entry in relaxng.error_log:
        if not entry.path:
            continue
        element = tree.xpath(entry.path)
        label = _element_label(tree, element[0]) if element else entry.path
        setting = _setting_for(settings, label, None)
        messages.append(_with_setting("%s <%s>: %s" % (os.path.basename(config_file), label, entry.message),
                                      setting))
    return messages


def schematron_messages(log_lines, config_file, settings=None):
    """The failed Schematron assertions KIWI logged (each names the attributes involved)."""
    messages = []
    collecting = False
    for _level, text in log_lines:
        if text.startswith("Schematron validation failed"):
            collecting = True
            continue
        if collecting and text.startswith("--> "):
            rule = " ".join(text[4:].split())
            attribute = _QUOTED_ATTRIBUTE.search(rule) or re.search(r"\b([a-z_]+) attribute\b", rule)
            setting = None
            if settings and attribute:
                setting = settings.get("@%s" % attribute.group(1))
            messages.append(_with_setting("%s: %s" % (os.path.basename(config_file), rule), setting))
        elif collecting:
            collecting = False
    return messages


def load_description(description, settings=None, profiles=None, check_host_paths=False):
    """Load and validate a description with KIWI; return a summary dict, or raise DescriptionError.

    settings maps element paths (``image/preferences/type``), ``path@attribute`` or ``@attribute`` to the
    name of the input that set them, so messages can say which input to fix.
    Before loading, the description's schemaversion is compared with what the installed KIWI reads; after
    loading, every file the description references must exist (kiwi_references; absolute paths outside the
    description only with check_host_paths).
    """
    config_file = find_config_file(description)
    kiwi = import_kiwi()
    exceptions = kiwi.exceptions
    kiwi_version = kiwi.version.__version__
    try:
        declared = kiwi_schema.declared_schema_version(config_file)
    except kiwi_schema.SchemaVersionError as exc:
        raise DescriptionError("%s cannot be read by KIWI" % config_file, [str(exc)])
    supported = kiwi_schema_version()
    try:
        kiwi_schema.check_schema_version(config_file, declared, supported, kiwi_version)
    except kiwi_schema.SchemaVersionError as exc:
        raise DescriptionError("%s is written for a newer KIWI than the installed %s" % (config_file, kiwi_version),
                               [str(exc)], details={"kiwi_version": kiwi_version, "schema_version": declared,
                                                    "kiwi_schema_version": supported})
    with _QuietKiwiLogger() as capture:
        try:
            xml_description = kiwi.xml_description.XMLDescription(config_file)
        except exceptions.KiwiError as exc:
            raise DescriptionError("%s cannot be read by KIWI" % config_file, [_kiwi_error_text(exc)])
        try:
            xml_data = xml_description.load()
        except exceptions.KiwiDescriptionInvalid:
            messages = relaxng_messages(capture.lines, xml_description.description, config_file, settings)
            if not messages and any("install: jing" in text for _level, text in capture.lines):
                messages = lxml_relaxng_messages(xml_description.description, config_file, settings)
            messages += schematron_messages(capture.lines, config_file, settings)
            if not messages:
                messages = [text for _level, text in capture.lines if text.startswith("-->")][-5:]
            messages = [kiwi_schema.attribute_hint(message, kiwi_version) for message in messages]
            raise DescriptionError("%s does not pass KIWI's schema validation" % config_file, messages)
        except exceptions.KiwiError as exc:
            raise DescriptionError("%s does not pass KIWI's validation" % config_file, [_kiwi_error_text(exc)])
        try:
            xml_state = kiwi.xml_state.XMLState(xml_data, profiles or None)
        except exceptions.KiwiError as exc:
            raise DescriptionError("%s: KIWI cannot select a build type" % config_file, [_kiwi_error_text(exc)])
        checker = kiwi.runtime_checker.RuntimeChecker(xml_state)
        problems = []
        for check in DESCRIPTION_RUNTIME_CHECKS:
            method = getattr(checker, check, None)
            if method is None:
                continue
            try:
                method()
            except exceptions.KiwiError as exc:
                problems.append("%s: %s" % (check, _kiwi_error_text(exc)))
        if problems:
            raise DescriptionError("%s fails KIWI's checks before a build" % config_file, problems)
        description_dir = os.path.dirname(os.path.abspath(config_file))
        references = kiwi_references.collect(xml_state, description_dir)
        missing = kiwi_references.missing(references, description_dir, check_host_paths)
        missing += kiwi_references.present_problems(description_dir, list(xml_state.profiles or []))
        if missing:
            raise DescriptionError("%s references files that do not exist" % config_file, missing)
        summary = summarize(xml_state, config_file, kiwi_version)
        summary.update(schema_version=declared, kiwi_schema_version=supported, references=references)
        return summary


def kiwi_schema_version():
    """The schema version the installed KIWI reads (None when its schema file does not say)."""
    from kiwi.defaults import Defaults

    try:
        return kiwi_schema.kiwi_schema_version(Defaults.get_schema_file())
    except (IOError, OSError):
        return None


def _kiwi_error_text(exc):
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())


def summarize(xml_state, config_file, kiwi_version):
    """What a caller wants to know about a loaded description (plain data)."""
    build_type = xml_state.build_type
    dracut = xml_state.get_dracut_config("setup")
    type_attributes = {}
    for name in ("image", "firmware", "filesystem", "overlayroot", "overlayroot_write_partition",
                 "overlayroot_readonly_filesystem", "overlayroot_readonly_partsize", "erofscompression",
                 "verity_blocks", "kernelcmdline", "editbootinstall", "bootpartition", "efipartsize", "eficsm"):
        getter = getattr(build_type, "get_%s" % name, None)
        value = getter() if getter else None
        if value is not None:
            type_attributes[name] = value
    return {
        "config_file": config_file,
        "name": xml_state.xml_data.get_name(),
        "version": xml_state.get_image_version(),
        "schemaversion": xml_state.xml_data.get_schemaversion(),
        "kiwi_version": kiwi_version,
        "profiles": list(xml_state.profiles or []),
        "package_manager": xml_state.get_package_manager(),
        "build_type": type_attributes,
        "bootloader": xml_state.get_build_type_bootloader_name(),
        "dracut_uefi": bool(dracut.uefi),
        "packages": sorted(set(xml_state.get_system_packages())),
        "bootstrap_packages": sorted(set(xml_state.get_bootstrap_packages())),
        "collections": sorted(set(xml_state.get_collections())),
        "ignored_packages": sorted(set(xml_state.get_system_ignore_packages())),
        "deleted_packages": sorted(set(xml_state.get_to_become_deleted_packages())),
        "repositories": [
            {"alias": repo.get_alias(), "type": repo.get_type(), "source": repo.get_source().get_path(),
             "repository_gpgcheck": repo.get_repository_gpgcheck(), "package_gpgcheck": repo.get_package_gpgcheck()}
            for repo in xml_state.get_repository_sections()
        ],
        "users": [
            {"name": user.get_name(), "password_set": _usable_password(user.get_password()), "shell": user.get_shell()}
            for user in (xml_state.get_users() if hasattr(xml_state, "get_users") else [])
        ],
    }


def _usable_password(password):
    """Whether a <user password=...> lets someone log in (empty, '!...' and '*...' are locked)."""
    return bool(password) and not password.startswith(("!", "*"))


# Where each attestation-critical setting lives, for findings.
SETTING_LOCATIONS = {
    "overlayroot": "type@overlayroot",
    "erofs": "type@overlayroot_readonly_filesystem",
    "verity": "type@verity_blocks",
    "uki": "bootloader, initrd",
    "verity_panic": "kernelcmdline",
    "no_initrd_shell": "kernelcmdline",
}


def missing_settings(summary):
    """[(key, readable line)] for the attestation-critical settings a description summary lacks."""
    texts = dict(ATTESTATION_SETTINGS)
    return [(key, "missing %s" % texts[key]) for key in _absent_settings(summary)]


def attestation_findings(summary):
    """The attestation-critical settings a description summary lacks, as readable lines (empty: all present)."""
    texts = dict(ATTESTATION_SETTINGS)
    return ["missing %s" % texts[key] for key in _absent_settings(summary)]


def _absent_settings(summary):
    build = summary.get("build_type", {})
    cmdline = (build.get("kernelcmdline") or "").split()
    present = {
        "overlayroot": bool(build.get("overlayroot")),
        "erofs": build.get("overlayroot_readonly_filesystem") == "erofs",
        "verity": build.get("verity_blocks") == "all",
        "uki": summary.get("bootloader") == "systemd_boot" and bool(summary.get("dracut_uefi")),
        "verity_panic": "panic-on-corruption" in (_last_value(cmdline, "rd.kiwi.verity_options") or "").split(","),
        "no_initrd_shell": (_last_value(cmdline, "rd.shell") or "").lower() in ("0", "no", "off", "false"),
    }
    return [key for key, _text in ATTESTATION_SETTINGS if not present[key]]
