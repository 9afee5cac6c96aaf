# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files a KIWI description references, and which of them are missing. Plain Python 3.9+, no Ansible imports.

KIWI notices a missing hook, archive or key only while it builds (after a builder has been paid for). What a
description references, as KIWI resolves it (kiwi/system/setup.py, prepare.py, xml_state.py):

- `<type editbootinstall=...>` and `editbootconfig=...` scripts: relative to the description directory, or absolute;
- `<repository customize=...>` scripts: the same;
- `<archive name=...>` tarballs and `<file name=...>` files of the selected `<packages>` sections: the same;
- `this://` repository sources (a directory) and signing keys (a file) inside the description directory
  (XMLState turns them into `dir:///...` / `file:///...` absolute paths inside it);
- `dir://`/`file://` repository sources and `file://` signing keys elsewhere: absolute paths on the host that builds.
  A relative `file://` key is an error for KIWI (RFC 8089); `this://` is the way to name a key in the description.

The scripts KIWI runs only when present (config.sh, images.sh, disk.sh, ...) and the root/ or root.tar.gz
overlay are not references, but KIWI tests them with os.path.exists(): one that is a dangling symbolic link is
skipped without a word (a config.sh that masks sshd would silently not run), one that is a directory fails the
build late. present_problems() names those; present_warnings() names a root.tar.gz that root/ hides.
Paths inside the description directory are always checked; absolute paths elsewhere name files on the host
that builds, so they are checked only when asked (check_host_paths, for a validation that runs on the builder).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tarfile

from urllib.parse import urlparse

# The scripts KIWI runs when the description directory has them (kiwi/defaults.py, kiwi/system/setup.py).
OPTIONAL_SCRIPTS = ("post_bootstrap.sh", "config.sh", "config-overlay.sh", "config-host-overlay.sh", "images.sh",
                    "pre_disk_sync.sh", "disk.sh")
OVERLAY_DIRECTORY = "root"
OVERLAY_ARCHIVE = "root.tar.gz"


def _call(obj, name, default=None):
    """obj.name() when this KIWI has that method (older KIWI releases lack some), else default."""
    method = getattr(obj, name, None)
    if method is None:
        return default
    value = method()
    return default if value is None else value


def _local(path, description_dir):
    """The path a description-relative or absolute reference names."""
    return path if os.path.isabs(path) else os.path.join(description_dir, path)


def collect(xml_state, description_dir):
    """[{"element", "path" (as written), "resolved", "kind" (file|directory), "problem"}] of a loaded description."""
    found = []

    def add(element, written, resolved, kind, problem=None):
        if resolved and written.startswith(("dir://", "file://")) and inside(resolved, description_dir):
            # XMLState resolved the this:// the description wrote; show it as written
            written = "this://" + os.path.relpath(resolved, os.path.realpath(description_dir))
        found.append({"element": element, "path": written, "resolved": resolved, "kind": kind, "problem": problem})

    build_type = xml_state.build_type
    for attribute in ("editbootinstall", "editbootconfig"):
        value = _call(build_type, "get_%s" % attribute)
        if value:
            add("<type %s>" % attribute, value, _local(value, description_dir), "file")
    for repo in _call(xml_state, "get_repository_sections", []):
        source = repo.get_source()
        label = '<repository alias="%s">' % (repo.get_alias() or source.get_path())
        customize = _call(repo, "get_customize")
        if customize:
            add(label[:-1] + " customize>", customize, _local(customize, description_dir), "file")
        path = source.get_path() or ""
        parsed = urlparse(path)
        if parsed.scheme in ("dir", "file") or path.startswith("/"):
            local = parsed.netloc + parsed.path if parsed.scheme else path
            add(label[:-1] + " source>", path, local, "directory")
        elif parsed.scheme == "this":
            add(label[:-1] + " source>", path, os.path.join(description_dir, path[len("this://"):]), "directory")
        for signing in _call(source, "get_signing", []):
            key = signing.get_key() or ""
            parsed = urlparse(key)
            if parsed.scheme == "this":
                add(label[:-1] + " signing key>", key, os.path.join(description_dir, key[len("this://"):]), "file")
            elif parsed.scheme == "file":
                if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
                    add(label[:-1] + " signing key>", key, None, "file",
                        "a file:// URI must name an absolute path (file:///path); use this://%s for a key file in "
                        "the description directory" % (parsed.netloc + parsed.path))
                else:
                    add(label[:-1] + " signing key>", key, parsed.path, "file")
    archives = _call(xml_state, "get_bootstrap_archives", []) + _call(xml_state, "get_system_archives", [])
    for name in archives:
        add("<archive name>", name, _local(name, description_dir), "file")
    files = list(_call(xml_state, "get_bootstrap_files", {})) + list(_call(xml_state, "get_system_files", {}))
    for name in files:
        add("<file name>", name, _local(name, description_dir), "file")
    return found


def inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def missing(references, description_dir, check_host_paths=False):
    """One readable line per reference that is missing (or malformed); marks each reference's checked/exists."""
    lines = []
    for ref in references:
        resolved = ref["resolved"]
        if ref["problem"]:
            ref.update(checked=True, exists=False)
            lines.append("%s %s: %s" % (ref["element"], ref["path"], ref["problem"]))
            continue
        in_description = inside(resolved, description_dir)
        ref["checked"] = in_description or check_host_paths
        if not ref["checked"]:
            ref["exists"] = None
            continue
        test = os.path.isdir if ref["kind"] == "directory" else os.path.isfile
        ref["exists"] = test(resolved)
        if not ref["exists"]:
            where = "in the description directory" if in_description else "on this host"
            what = "directory" if ref["kind"] == "directory" else "file"
            lines.append("%s %s: no such %s %s (%s)" % (ref["element"], ref["path"], what, where, resolved))
    return lines


def _dangling(path):
    return os.path.islink(path) and not os.path.exists(path)


def present_problems(description_dir, profiles=None):
    """One readable line per file KIWI picks up by name that is there but that KIWI would skip or fail on.

    A script or overlay that is a dangling symbolic link (KIWI sees no file and skips it silently), a script that is
    not a regular file, a root/ that is not a directory, a root.tar.gz (used when there is no root/) that is not a
    readable tar archive, a profile's overlay directory that is a dangling link.
    """
    lines = []
    for name in OPTIONAL_SCRIPTS:
        path = os.path.join(description_dir, name)
        if _dangling(path):
            lines.append("%s: a symbolic link to %s, which does not exist: KIWI would skip the script without a word"
                         % (name, os.readlink(path)))
        elif os.path.exists(path) and not os.path.isfile(path):
            lines.append("%s: not a regular file (KIWI runs it as a script)" % name)
    root = os.path.join(description_dir, OVERLAY_DIRECTORY)
    archive = os.path.join(description_dir, OVERLAY_ARCHIVE)
    if _dangling(root):
        lines.append("%s/: a symbolic link to %s, which does not exist: KIWI would skip the overlay without a word"
                     % (OVERLAY_DIRECTORY, os.readlink(root)))
    elif os.path.exists(root) and not os.path.isdir(root):
        lines.append("%s: not a directory: KIWI would skip the overlay without a word (the overlay is the directory "
                     "root/, or the archive root.tar.gz)" % OVERLAY_DIRECTORY)
    if not os.path.isdir(root):
        if _dangling(archive):
            lines.append("%s: a symbolic link to %s, which does not exist: KIWI would skip the overlay without a word"
                         % (OVERLAY_ARCHIVE, os.readlink(archive)))
        elif os.path.exists(archive):
            problem = _tar_problem(archive)
            if problem:
                lines.append("%s: not a readable tar archive (%s): KIWI would fail extracting it into the image"
                             % (OVERLAY_ARCHIVE, problem))
    for profile in profiles or []:
        path = os.path.join(description_dir, profile)
        if _dangling(path):
            lines.append("%s/: the overlay of profile %s is a symbolic link to %s, which does not exist: KIWI would "
                         "skip it without a word" % (profile, profile, os.readlink(path)))
    return lines


def _tar_problem(path):
    """Why a file is not a readable tar archive (None when it is)."""
    try:
        with tarfile.open(path, "r:*") as archive:
            for _member in archive:
                pass
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def present_warnings(description_dir):
    """What KIWI does with the description's files that its author probably did not mean: one line each."""
    lines = []
    if os.path.isdir(os.path.join(description_dir, OVERLAY_DIRECTORY)) and \
            os.path.lexists(os.path.join(description_dir, OVERLAY_ARCHIVE)):
        lines.append("the description has both root/ and root.tar.gz: KIWI copies root/ and ignores root.tar.gz")
    return lines
