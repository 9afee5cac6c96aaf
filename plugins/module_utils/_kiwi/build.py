# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run `kiwi-ng system build` and read what it produced. Plain Python 3.9+, no Ansible and no KIWI imports.

What a finished build leaves in the target directory:
- KIWI's `kiwi.result.json` (result name -> {"filename": absolute path, ...}): the disk image (`disk_image`),
  or a filesystem image / root archive for other image types, the package list (`image_packages`), ...
- from the description's edit_boot_install.sh hook (attestable AL2023 descriptions): `<disk>.efi` (the final
  UKI the firmware boots; when the hook does not copy it, find_uki reads it from the disk's ESP),
  `<disk>.veritytab` (the /etc/veritytab the UKI's initrd carries) and
  `pcr_measurements.json` (the image's own nitro-tpm-pcr-compute output);
- from this file: a marker (MARKER_NAME) recording which description (digest over all its files) and which
  build options produced the build, plus everything the build returned, so that a second run with the same
  inputs can answer without building.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import json
import os
import re
import shutil
import time

from ansible_collections.attestable.ami.plugins.module_utils._boot import esp as esp_image
from ansible_collections.attestable.ami.plugins.module_utils._common import atomic_file, processes
from ansible_collections.attestable.ami.plugins.module_utils._common.file_digest import sha256_file
from ansible_collections.attestable.ami.plugins.module_utils._pcr.authenticode import ImageError, PeImage

MARKER_NAME = ".attestable-kiwi-build.json"
MARKER_VERSION = 1
RESULT_JSON = "kiwi.result.json"

# Result names of the main artifact, by preference (oem/raw disk first).
MAIN_RESULT_NAMES = ("disk_image", "filesystem_image", "root_archive", "live_image", "container", "installation_image")

_VERITY_FORMAT = re.compile(r"EXEC: \[veritysetup format (?P<args>[^\]]*)\]")
_VERITY_METADATA = re.compile(r"--> dm verity metadata: (?P<dict>\{[^\n]*\})")
_LOG_ERROR = re.compile(r"^\[ ERROR\s*\]")
_LOG_LINE = re.compile(r"^\[ (?P<level>[A-Z]+)\s*\]: [0-9:]+ \| ")
_HEX = re.compile(r"^[0-9a-f]+$")


class KiwiBuildError(RuntimeError):
    """A build that could not run or failed; .lines holds the meaningful log lines, .log_file the log."""

    def __init__(self, message, lines=None, log_file=None):
        super(KiwiBuildError, self).__init__(message)
        self.lines = list(lines or [])
        self.log_file = log_file


def build_key(description_digest, profiles, kiwi_args, config_digest, environment=None):
    """What identifies a build: the description's files and every option that changes KIWI's output.

    The user's environment variables count only when given (so that builds recorded before the option existed
    stay current); the automatic SYSTEMD_RELAX_ESP_CHECKS does not change what KIWI writes.
    """
    key = {
        "description_digest": description_digest,
        "profiles": sorted(profiles or []),
        "kiwi_args": list(kiwi_args or []),
        "config_digest": config_digest,
    }
    if environment:
        key["environment"] = sorted([name, value] for name, value in environment.items())
    return key


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RELAX_ESP = "SYSTEMD_RELAX_ESP_CHECKS"


def kernel_has_vfat(filesystems="/proc/filesystems"):
    """Whether the running kernel can mount vfat (None when /proc/filesystems cannot be read)."""
    try:
        with open(filesystems) as handle:
            return any(line.split() and line.split()[-1] == "vfat" for line in handle)
    except (IOError, OSError):
        return None


def environment_strings(user_environment):
    """The user's variables as strings (booleans as true/false); KiwiBuildError for a name or value that
    an environment cannot hold."""
    strings = {}
    for name, value in (user_environment or {}).items():
        if not _ENV_NAME.match(str(name)):
            raise KiwiBuildError("environment: %r is not a variable name (letters, digits and _, not starting "
                                 "with a digit)" % (name,))
        if value is None or isinstance(value, (dict, list)):
            raise KiwiBuildError("environment: %s must have a string value, got %r" % (name, value))
        if isinstance(value, bool):
            value = "true" if value else "false"
        strings[str(name)] = str(value)
    return strings


def build_environment(user_environment, filesystems="/proc/filesystems"):
    """The variables to add to kiwi-ng's environment: the user's, plus SYSTEMD_RELAX_ESP_CHECKS=1 when the
    kernel has no vfat (unless the user set it).

    Without a vfat driver the ESP is mounted through helpers that copy it into a ramfs (scripts/vfat), and
    bootctl refuses a non-FAT file system as ESP ("is not a FAT EFI System Partition") unless that variable is
    set.
    """
    added = environment_strings(user_environment)
    if RELAX_ESP not in added and kernel_has_vfat(filesystems) is False:
        added[RELAX_ESP] = "1"
    return added


def file_digest(path):
    if not path:
        return None
    return "sha256:" + sha256_file(path)


def read_marker(target_dir):
    path = os.path.join(target_dir, MARKER_NAME)
    try:
        with open(path) as handle:
            marker = json.load(handle)
    except (IOError, OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == MARKER_VERSION else None


def write_marker(target_dir, key, result):
    path = os.path.join(target_dir, MARKER_NAME)
    atomic_file.write_text(path, json.dumps({"version": MARKER_VERSION, "key": key, "result": result,
                                             "finished_at": int(time.time())}, indent=2, sort_keys=True))


def up_to_date(target_dir, key):
    """(True, previous result) when target_dir holds a successful build for this key whose files all exist."""
    marker = read_marker(target_dir)
    if not marker:
        return False, "no finished build recorded in %s" % target_dir
    if marker.get("key") != key:
        changed = sorted(k for k in set(key) | set(marker.get("key") or {}) if key.get(k) != (marker.get("key") or {}).get(k))
        return False, "the recorded build differs in %s" % ", ".join(changed)
    result = marker.get("result") or {}
    for name in ("disk", "image", "uki"):
        if result.get(name) and not os.path.exists(result[name]):
            return False, "%s of the recorded build is gone" % result[name]
    if not os.path.exists(os.path.join(target_dir, RESULT_JSON)):
        return False, "%s is gone" % RESULT_JSON
    return True, result


def check_target_dir(target_dir, log_file=None):
    """Refuse a target directory that holds anything but an earlier KIWI build (it gets cleaned before a build)."""
    if not os.path.exists(target_dir):
        return
    if not os.path.isdir(target_dir):
        raise KiwiBuildError("target_dir %s exists and is not a directory" % target_dir)
    entries = os.listdir(target_dir)
    known = {MARKER_NAME, RESULT_JSON, "build"}
    if log_file and os.path.dirname(os.path.abspath(log_file)) == os.path.abspath(target_dir):
        known |= {os.path.basename(log_file), os.path.basename(log_file) + ".stderr"}
    if entries and not known & set(entries):
        raise KiwiBuildError("target_dir %s holds files that are not an earlier KIWI build (%s): give an empty or new "
                             "directory" % (target_dir, ", ".join(sorted(entries)[:5])))


def mounts_under(path):
    """Mount points at or below path (a crashed KIWI can leave /proc, /dev, ... bound into its image root)."""
    path = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                mount_point = line.split()[4].replace("\\040", " ")
                if mount_point == path or mount_point.startswith(path + os.sep):
                    found.append(mount_point)
    except (IOError, OSError):
        pass
    return found


def clean_previous_build(target_dir):
    """Remove what an earlier build left (its build/ tree, result files and marker), never crossing a mount."""
    marker = os.path.join(target_dir, MARKER_NAME)
    if os.path.exists(marker):
        os.remove(marker)
    build_dir = os.path.join(target_dir, "build")
    if os.path.isdir(build_dir):
        mounted = mounts_under(build_dir)
        if mounted:
            raise KiwiBuildError("%s still has file systems mounted from an earlier build (%s): unmount them "
                                 "(umount -R) before building again" % (build_dir, ", ".join(mounted[:5])))
        shutil.rmtree(build_dir)
    for name in (RESULT_JSON, "kiwi.result"):
        path = os.path.join(target_dir, name)
        if os.path.exists(path):
            os.remove(path)


def find_kiwi_ng(explicit=None, search_path=None):
    """The kiwi-ng executable: the explicit path, else the one beside this Python (a venv), else on PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    import sys

    candidates = [os.path.join(os.path.dirname(sys.executable), "kiwi-ng")]
    for directory in (search_path or os.environ.get("PATH", "")).split(os.pathsep):
        if directory:
            candidates.append(os.path.join(directory, "kiwi-ng"))
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def build_command(kiwi_ng, description, target_dir, log_file, profiles=None, kiwi_args=None, config=None):
    command = [kiwi_ng, "--logfile", log_file]
    if config:
        command += ["--config", config]
    for profile in profiles or []:
        command += ["--profile", profile]
    command += ["system", "build", "--description", description, "--target-dir", target_dir]
    command += list(kiwi_args or [])
    return command


def run_build(command, log_file, timeout=None, stderr_file=None, environment=None):
    """Run KIWI, its log going to log_file as it builds; returns the exit code. Raises KiwiBuildError on timeout.

    KIWI's own --logfile receives the full debug log line by line (what a playbook can tail while an async
    task runs); the console output is not needed and goes to stderr_file (Python tracebacks land there).
    environment: variables added to this process's environment for KIWI.
    The caller's TMPDIR is not passed on (unless given in environment): KIWI's bootstrap runs mktemp inside the
    image root, where a TMPDIR of the controller's or the user's (/tmp/<something>) does not exist.
    """
    stderr_file = stderr_file or log_file + ".stderr"
    atomic_file.write_text(log_file, "")  # KIWI appends: start each build with an empty log
    env = dict((k, v) for k, v in os.environ.items() if k != "TMPDIR")
    env.update(environment or {})
    try:
        # SIGTERM first, with time for KIWI to unmount what it can; the whole process group goes in the end,
        # also when this process is interrupted while it waits
        with processes.start(command, stdout=None, stderr=stderr_file, append=False, env=env, term_grace=60,
                             kill_grace=10) as process:
            return process.wait(timeout=timeout)
    except processes.ProcessTimeout:
        raise KiwiBuildError("kiwi-ng did not finish within %s seconds and was stopped" % timeout,
                             tail_lines(log_file), log_file)
    except processes.ProcessNotStarted as exc:
        raise KiwiBuildError(str(exc), log_file=log_file)


def tail_lines(path, count=15):
    return processes.tail_lines(path, count)


def error_lines(log_file, stderr_file=None, limit=20):
    """The meaningful lines of a failed build: KIWI's ERROR records (with their continuation lines), else the
    log's last lines; plus the console's last lines when Python itself failed."""
    lines = []
    try:
        with open(log_file, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except (IOError, OSError):
        text = ""
    collecting = False
    for line in text.splitlines():
        if _LOG_ERROR.match(line):
            collecting = True
            lines.append(line)
        elif collecting and not _LOG_LINE.match(line):
            if line.strip():
                lines.append(line)
        else:
            collecting = False
    if not lines:
        lines = tail_lines(log_file)
    if stderr_file:
        console = [line for line in tail_lines(stderr_file, 10) if "Traceback" in line or "Error" in line]
        lines += [line for line in console if line not in lines]
    return lines[-limit:]


def load_result(target_dir):
    path = os.path.join(target_dir, RESULT_JSON)
    try:
        with open(path) as handle:
            result = json.load(handle)
    except (IOError, OSError, ValueError) as exc:
        raise KiwiBuildError("KIWI finished but %s cannot be read: %s" % (path, exc))
    if not isinstance(result, dict):
        raise KiwiBuildError("%s does not hold a result object" % path)
    return result


def artifacts_from_result(result):
    """{result name: file} for every entry of kiwi.result.json."""
    files = {}
    for name, entry in result.items():
        if isinstance(entry, dict) and entry.get("filename"):
            files[name] = entry["filename"]
    return files


def main_artifact(files):
    for name in MAIN_RESULT_NAMES:
        if name in files:
            return files[name]
    return None


def parse_packages(path):
    """KIWI's .packages file (name|epoch|version|release|arch|disturl|license) as [{name, version, arch}]."""
    packages = []
    if not path or not os.path.exists(path):
        return packages
    with open(path) as handle:
        for line in handle:
            fields = line.rstrip("\n").split("|")
            if len(fields) < 5 or not fields[0]:
                continue
            name, epoch, version, release, arch = fields[:5]
            full = version
            if epoch not in ("", "None", "(none)", "0"):
                full = "%s:%s" % (epoch, full)
            if release not in ("", "None", "(none)"):
                full = "%s-%s" % (full, release)
            packages.append({"name": name, "version": full, "arch": arch})
    return packages


def parse_veritytab(text):
    """A veritytab line KIWI writes: 'verityroot DATA HASH ROOTHASH hash-offset=N,hash-block-size=B'."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or line.lstrip().startswith("#"):
            continue
        options = {}
        if len(fields) > 4:
            for option in fields[4].split(","):
                key, _sep, value = option.partition("=")
                options[key] = value
        root_hash = fields[3].lower()
        if not _HEX.match(root_hash):
            continue
        return {
            "name": fields[0],
            "data_device": fields[1],
            "hash_device": fields[2],
            "root_hash": root_hash,
            "hash_offset": int(options["hash-offset"]) if options.get("hash-offset", "").isdigit() else None,
            "hash_block_size": int(options["hash-block-size"]) if options.get("hash-block-size", "").isdigit() else None,
            "options": fields[4] if len(fields) > 4 else "",
            "line": line.strip(),
        }
    return None


def verity_from_log(log_file):
    """The dm-verity parameters of the last `veritysetup format` KIWI logged (root hash, salt, hash offset)."""
    try:
        with open(log_file, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return None
    metadata = None
    for match in _VERITY_METADATA.finditer(text):
        metadata = match
    if metadata is None:
        return None
    try:
        values = ast.literal_eval(metadata.group("dict"))
    except (ValueError, SyntaxError):
        return None
    root_hash = str(values.get("Roothash", "")).lower()
    if not _HEX.match(root_hash):
        return None
    hash_offset = None
    hash_block_size = None
    for match in _VERITY_FORMAT.finditer(text[:metadata.start()]):
        args = match.group("args").split()
        for arg in args:
            if arg.startswith("--hash-offset="):
                hash_offset = int(arg.split("=", 1)[1])
            elif arg.startswith("--hash-block-size="):
                hash_block_size = int(arg.split("=", 1)[1])
    data_blocks = values.get("Datablocks")
    return {
        "root_hash": root_hash,
        "salt": values.get("Salt"),
        "hash_algorithm": values.get("Hashalgorithm"),
        "data_blocks": int(data_blocks) if str(data_blocks).isdigit() else None,
        "data_block_size": int(values["Datablocksize"]) if str(values.get("Datablocksize")).isdigit() else None,
        "hash_offset": hash_offset,
        "hash_block_size": hash_block_size or (int(values["Hashblocksize"])
                                               if str(values.get("Hashblocksize")).isdigit() else None),
        "uuid": values.get("UUID"),
    }


def read_pcr_measurements(path):
    """pcr_measurements.json as nitro-tpm-pcr-compute writes it: {"Measurements": {...}} -> the inner dict."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (IOError, OSError, ValueError) as exc:
        raise KiwiBuildError("%s (written by the image's nitro-tpm-pcr-compute) is not JSON: %s" % (path, exc))
    if isinstance(data, dict) and isinstance(data.get("Measurements"), dict):
        return data["Measurements"]
    return data


def find_uki(disk, stem):
    """(path, source) of the final UKI: the hook's copy beside the disk ("hook"), else the ESP's removable-media
    boot loader (EFI/BOOT/BOOTX64.EFI or BOOTAA64.EFI) read from the disk itself and written beside it ("esp").

    AWS's sample hook and most users' hooks only move the UKI inside the ESP. When the hook did copy one, it must
    be the binary the ESP boots, or the measurements would be of something else. (None, None) without a disk,
    without a GPT ESP (e.g. a BIOS disk), or when the ESP boots something that is not a UKI (a boot loader such as
    systemd-boot or GRUB: the hook did not make the firmware boot the UKI directly).
    """
    hook_copy = stem + ".efi" if stem else None
    if not disk:
        return (hook_copy, "hook") if hook_copy and os.path.exists(hook_copy) else (None, None)
    try:
        esp_image.find_esp(disk)
    except esp_image.EspImageError:
        return (hook_copy, "hook") if hook_copy and os.path.exists(hook_copy) else (None, None)
    if os.path.exists(hook_copy):
        from_esp = hook_copy + ".esp"
        try:
            inner = esp_image.copy_boot_loader(disk, from_esp)
            if sha256_file(from_esp) != sha256_file(hook_copy):
                raise KiwiBuildError("the UKI the hook copied beside the disk (%s) differs from the one the disk's "
                                     "ESP boots (%s): measurements of the copy would not be of what boots"
                                     % (hook_copy, inner))
        except esp_image.EspImageError:
            pass  # the ESP boots no EFI/BOOT/BOOT*.EFI: nothing to compare the hook's copy with
        finally:
            if os.path.exists(from_esp):
                os.unlink(from_esp)
        return hook_copy, "hook"
    try:
        esp_image.copy_boot_loader(disk, hook_copy)
    except esp_image.EspImageError:
        return None, None
    if not is_uki(hook_copy):
        # e.g. systemd-boot or GRUB, loading a UKI from EFI/Linux: measuring that binary alone would give reference
        # values of something other than what boots. No UKI then (an attestable image boots its UKI directly).
        os.unlink(hook_copy)
        return None, None
    return hook_copy, "esp"


def is_uki(path):
    """Whether an EFI binary is a UKI: a PE image with a .linux section (the kernel)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        return PeImage(data, name=path).section(".linux") is not None
    except (ImageError, IOError, OSError):
        return False


def output_files(result):
    """The existing files a build returned (RV artifacts, uki, the veritytab beside the disk, the log), sorted."""
    paths = set((result.get("artifacts") or {}).values())
    paths.update([result.get("uki"), (result.get("veritytab") or {}).get("path"), result.get("log_file")])
    return sorted(path for path in paths if path and os.path.isfile(path) and not os.path.islink(path))


def collect(target_dir, log_file):
    """Everything a finished build produced, as the module returns it (without kiwi_version/digest)."""
    result = load_result(target_dir)
    files = artifacts_from_result(result)
    image = main_artifact(files)
    disk = files.get("disk_image")
    stem = os.path.splitext(disk or image or "")[0]
    uki, uki_source = find_uki(disk, stem)
    veritytab = None
    if stem and os.path.exists(stem + ".veritytab"):
        with open(stem + ".veritytab") as handle:
            veritytab = parse_veritytab(handle.read())
        if veritytab is None:
            raise KiwiBuildError("%s holds no veritytab line" % (stem + ".veritytab"))
        veritytab.update({"path": stem + ".veritytab", "source": "initrd"})
        logged = verity_from_log(log_file)
        if logged and logged["root_hash"] != veritytab["root_hash"]:
            raise KiwiBuildError("the root hash in the UKI's /etc/veritytab (%s) differs from the one KIWI logged "
                                 "(%s): the disk and its UKI do not belong together"
                                 % (veritytab["root_hash"], logged["root_hash"]), log_file=log_file)
        if logged:
            veritytab.update({k: v for k, v in logged.items() if veritytab.get(k) is None})
    else:
        veritytab = verity_from_log(log_file)
        if veritytab:
            veritytab["source"] = "log"
    return {
        "disk": disk,
        "image": image,
        "uki": uki,
        "uki_source": uki_source,
        "veritytab": veritytab,
        "root_hash": veritytab["root_hash"] if veritytab else None,
        "packages": parse_packages(files.get("image_packages")),
        "pcr_measurements": read_pcr_measurements(os.path.join(target_dir, "pcr_measurements.json")),
        "artifacts": files,
        "result": result,
        "log_file": log_file,
    }
