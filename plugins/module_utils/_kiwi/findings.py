# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What in a KIWI description undoes the image's attestation, beyond the missing settings: kernel arguments that
open a shell or weaken dm-verity, repositories whose content nobody verifies, operator access (SSH, SSM, getty,
user data). Plain Python 3.9+, no Ansible and no KIWI imports: it reads the summary kiwi_description makes and
the description directory.

A finding is {"setting", "value", "reason", "severity"}: severity "unattestable" (the image's measurements would
not prove what runs on it, or someone could get a shell on it) or "warning" (weaker than it should be, but the
measured image still is what runs).

Decisions, with their reasons:
- Kernel arguments are read from `<type kernelcmdline>` and from overlay files that add some (root/etc/cmdline.d,
  root/etc/dracut.conf.d `kernel_cmdline=`). dracut and KIWI take the *last* occurrence of an argument.
- `rd.kiwi.verity_options`: KIWI's kiwi-veritytab-setup.sh (dracut module 50kiwi-verity) appends the comma list
  to the veritytab options and runs `eval "veritysetup open ... --<option> ..."`. Only `panic-on-corruption`
  keeps the guarantee that a corrupted root never runs (`ignore-corruption` runs it, `restart-on-corruption` and
  the default EIO let the boot go on or retry), `ignore-zero-blocks` changes nothing for attestation; any other
  option (`check-at-most-once`, unknown names, shell syntax, which the eval would run) is a finding.
- Repositories: rpm-md (dnf, zypper) content is verified when `package_gpgcheck="true"` or
  `repository_gpgcheck="true"` (KIWI writes gpgcheck=0 for a repository that sets neither, whatever
  `<rpm-check-signatures>` says); apt-deb content is verified unless `repository_gpgcheck="false"` (KIWI then
  writes `trusted: yes`). Unverified content from the network is unattestable. Plain http:// or ftp:// with
  verification is a warning (signed but replayable metadata). `obs://` is fetched from the build service's
  https download server. Local sources (`dir://`, `file://`, `this://`, `iso://`, `obsrepositories:`) have no
  transport; unverified local content is a warning (a `this://` repository is part of the description digest).
- Operator access: packages that give a remote or console login or run the launcher's commands (openssh-server,
  amazon-ssm-agent, ec2-instance-connect, cloud-init, ...) unless `<ignore>`d or deleted; systemd units enabled
  for them or for a getty/debug shell by the overlay (`root/etc/systemd/system/*.wants/`, presets) or by the
  scripts (`systemctl enable|reenable|unmask|start|preset|add-wants`, a link made into a `*.wants/` directory, KIWI's
  `baseInsertService`). A user with a login password and a login shell (given, or the default when the summary
  says the user has none) is unattestable: any console getty (the EC2 serial console) or login service makes it a
  shell. A login password with a no-login shell, and a console getty (no `systemd.getty_auto=false`) are warnings:
  they open nothing without each other and a login service.
  Packages that arrive as dependencies of a collection cannot be seen without resolving them: `<ignore>` them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

UNATTESTABLE = "unattestable"
WARNING = "warning"

_FALSE = ("0", "no", "off", "false", "n")
VERITY_OPTIONS_KEPT = ("panic-on-corruption",)
VERITY_OPTIONS_HARMLESS = ("ignore-zero-blocks",)
_RESCUE_WORDS = ("emergency", "rescue", "single", "s", "S", "1", "-s", "-b")
_RESCUE_UNITS = ("emergency.target", "rescue.target", "emergency.service", "rescue.service", "emergency", "rescue",
                 "debug-shell.service")

OPERATOR_ACCESS_PACKAGES = {
    "openssh-server": "SSH logins",
    "dropbear": "SSH logins (dropbear)",
    "dropbear-bin": "SSH logins (dropbear)",
    "tinysshd": "SSH logins (tinysshd)",
    "amazon-ssm-agent": "AWS Systems Manager sessions and Run Command (a root shell through the SSM API)",
    "ec2-instance-connect": "EC2 Instance Connect SSH keys",
    "ec2-instance-connect-config": "EC2 Instance Connect SSH keys",
    "cloud-init": "runs the launcher's user data as root at boot",
    "telnetd": "telnet logins",
    "telnet-server": "telnet logins",
    "inetutils-telnetd": "telnet logins",
    "rsh-server": "rsh logins",
    "cockpit-ws": "web console logins",
    "cockpit": "web console logins",
    "ssh": "SSH logins (Debian's ssh metapackage depends on openssh-server)",
    "dropbear-run": "SSH logins (dropbear)",
    "shellinabox": "a shell in the browser",
    "ttyd": "a shell in the browser",
    "xrdp": "remote desktop logins",
    "x11vnc": "remote desktop (VNC)",
    "tigervnc-server": "remote desktop (VNC)",
    "tigervnc-standalone-server": "remote desktop (VNC)",
    "salt-minion": "runs the Salt master's commands as root",
}
_ACCESS_UNIT = re.compile(r"^(sshd?|sshd@|sshd-keygen|ssh\.socket|sshd\.socket|dropbear|tinysshd|amazon-ssm-agent|"
                          r"ec2-instance-connect|cloud-init|cloud-final|cloud-config|telnet|cockpit|shellinabox|ttyd|xrdp|x11vnc|"
                          r"salt-minion|"
                          r"(serial-|container-|console-)?getty|autovt|debug-shell)"
                          r"([@.-][^/\s]*)?$")
_SYSTEMCTL = re.compile(r"\bsystemctl\s+(?:-{1,2}[\w-]+(?:=\S+)?\s+)*(enable|reenable|unmask|start|restart|preset)\s+"
                        r"([^\n;&|#]+)")
# `systemctl add-wants TARGET UNIT...`: the first word is the target, the rest are enabled.
_ADD_WANTS = re.compile(r"\bsystemctl\s+(?:-{1,2}[\w-]+(?:=\S+)?\s+)*(add-wants|add-requires)\s+\S+\s+([^\n;&|#]+)")
# A symbolic link made into a *.wants/ or *.requires/ directory: `ln -s[f] SOURCE DIR.wants/[NAME]`.
_WANTS_LINK = re.compile(r"\bln\s+(?:-\w+\s+)*(\S+)\s+(\S*\.(?:wants|requires)/?(\S*))")
_NO_LOGIN_SHELLS = ("nologin", "false", "true", "sync")
_INSERT_SERVICE = re.compile(r"\bbaseInsertService\s+([^\s;&|#]+)")
_SCRIPTS = ("config.sh", "images.sh", "config-overlay.sh", "config-host-overlay.sh", "disk.sh",
            "pre_disk_sync.sh", "post_bootstrap.sh")
_SHELL_SYNTAX = re.compile(r"[^A-Za-z0-9,=._/:-]")
_DRACUT_CMDLINE = re.compile(r"""^\s*kernel_cmdline\s*\+?=\s*["']?([^"'\n]*)["']?""", re.MULTILINE)


def finding(setting, value, reason, severity=UNATTESTABLE):
    return {"setting": setting, "value": value, "reason": reason, "severity": severity}


def last_argument(args, name):
    """The value dracut/KIWI use for an argument (its last occurrence): '' for a bare one, None when absent."""
    value = None
    for arg in args:
        key, sep, val = arg.partition("=")
        if key == name:
            value = val if sep else ""
    return value


def _enabled(value):
    return value is not None and value.lower() not in _FALSE


def kernel_arg_findings(args, setting="kernelcmdline", check_shell=True):
    """Findings for kernel arguments (one list, in order), as dracut, systemd and KIWI's initrd read them.

    check_shell=False leaves rd.shell out (for <type kernelcmdline>, whose rd.shell=0 is a required setting that
    kiwi_description.attestation_findings reports when missing).
    """
    found = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if key in ("rd.break", "rdbreak"):
            found.append(finding(setting, arg, "drops to a shell in the initrd (dracut breakpoint)"))
        elif key in ("init", "rdinit"):
            found.append(finding(setting, arg, "runs another program as PID 1 instead of the image's init"))
        elif key in ("systemd.debug_shell", "systemd.debug-shell", "rd.systemd.debug_shell",
                     "rd.systemd.debug-shell") and (not sep or _enabled(value)):
            found.append(finding(setting, arg, "starts a root shell without login on tty9 (systemd debug shell)"))
        elif key in ("systemd.unit", "rd.systemd.unit") and value in _RESCUE_UNITS:
            found.append(finding(setting, arg, "boots into a rescue/emergency shell"))
        elif not sep and arg in _RESCUE_WORDS:
            found.append(finding(setting, arg, "boots into a rescue/emergency shell (systemd's runlevel words)"))
        elif key in ("rd.debug", "rdinitdebug", "rd.kiwi.debug", "rd.udev.debug") and (not sep or _enabled(value)):
            found.append(finding(setting, arg, "initrd debug mode: traces every step of the boot and keeps "
                                 "debugging facilities an attested image must not have"))
        elif key == "rd.kiwi.verity_options":
            for option in value.split(","):
                if option in VERITY_OPTIONS_KEPT or option in VERITY_OPTIONS_HARMLESS:
                    continue
                if _SHELL_SYNTAX.search(option):
                    reason = ("is shell syntax: KIWI's kiwi-veritytab-setup.sh passes these options to eval, so "
                              "it would run as a command in the initrd")
                elif option.replace("_", "-") in ("ignore-corruption", "restart-on-corruption"):
                    reason = ("lets the boot go on (or restart) on a corrupted root instead of panicking: only "
                              "panic-on-corruption keeps a changed root from running")
                else:
                    reason = ("is not an option that keeps the dm-verity guarantee (allowed: %s)"
                              % ", ".join(VERITY_OPTIONS_KEPT + VERITY_OPTIONS_HARMLESS))
                found.append(finding(setting, arg, "verity option %r %s" % (option, reason)))
    shell = last_argument(args, "rd.shell")
    if shell is None:
        shell = last_argument(args, "rdshell")
    if check_shell and shell is not None and _enabled(shell):
        value = "rd.shell" + ("=" + shell if shell else "")
        found.append(finding(setting, value, "allows a shell in the initrd when the boot fails"))
    return found


def cmdline_findings(cmdline, description_dir=None):
    """Kernel argument findings of <type kernelcmdline> and of overlay files that add kernel arguments."""
    found = kernel_arg_findings(cmdline.split(), check_shell=False)
    getty = last_argument(cmdline.split(), "systemd.getty_auto")
    if getty is None or _enabled(getty):
        found.append(finding("kernelcmdline", getty is None and "(no systemd.getty_auto)" or
                             "systemd.getty_auto=" + getty,
                             "systemd starts a login prompt on the console (getty) unless systemd.getty_auto=false",
                             WARNING))
    for rel, args in _overlay_cmdlines(description_dir):
        found += kernel_arg_findings(args, setting=rel)
    return found


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(1024 * 1024).decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def _regular_files(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if os.path.isfile(os.path.join(directory, name)) and not os.path.islink(os.path.join(directory, name)))


def _overlay_cmdlines(description_dir):
    """(relative file, [args]) for overlay files that add kernel arguments to the initrd or the UKI."""
    if not description_dir:
        return []
    root = os.path.join(description_dir, "root")
    results = []
    for path in _regular_files(os.path.join(root, "etc", "cmdline.d")):
        if path.endswith(".conf"):
            results.append((os.path.relpath(path, description_dir), _read(path).split()))
    for path in _regular_files(os.path.join(root, "etc", "dracut.conf.d")):
        args = []
        for match in _DRACUT_CMDLINE.finditer(_read(path)):
            args += match.group(1).split()
        if args:
            results.append((os.path.relpath(path, description_dir), args))
    cmdline = os.path.join(root, "etc", "kernel", "cmdline")
    if os.path.isfile(cmdline):
        results.append((os.path.relpath(cmdline, description_dir), _read(cmdline).split()))
    return results


def _scheme(source):
    if "://" in source:
        return source.split("://", 1)[0].lower()
    if source.startswith("obsrepositories:"):
        return "obsrepositories"
    return "dir" if source.startswith("/") else ""


def repository_findings(repositories):
    found = []
    for repo in repositories:
        label = "repository[%s]" % (repo.get("alias") or repo.get("source"))
        source = repo.get("source") or ""
        scheme = _scheme(source)
        local = scheme in ("dir", "file", "this", "iso", "obsrepositories")
        if repo.get("type") == "apt-deb":
            verified = repo.get("repository_gpgcheck") is not False
            how = 'repository_gpgcheck="false" (KIWI marks the repository trusted: yes)'
            check = "repository_gpgcheck"
        else:
            verified = repo.get("package_gpgcheck") is True or repo.get("repository_gpgcheck") is True
            how = 'neither package_gpgcheck="true" nor repository_gpgcheck="true"'
            check = "package_gpgcheck"
        if not verified:
            if local:
                found.append(finding("%s@%s" % (label, check), str(repo.get(check)).lower(),
                                     "no signature check (%s) on a local repository: its packages are whatever "
                                     "the building host holds" % how, WARNING))
            else:
                found.append(finding("%s@%s" % (label, check), str(repo.get(check)).lower(),
                                     "no signature check (%s): anyone who can change %s or the network path to it "
                                     "can change what the image holds" % (how, source)))
        if scheme in ("http", "ftp"):
            if verified:
                found.append(finding("%s source" % label, source,
                                     "fetched over %s: signatures are checked, but metadata can be replayed or "
                                     "withheld on the way; use an https:// URL" % scheme, WARNING))
            else:
                found.append(finding("%s source" % label, source,
                                     "fetched over %s without signature checks: use an https:// URL and turn on "
                                     "the signature check" % scheme))
        elif scheme not in ("https", "obs") and not local:
            found.append(finding("%s source" % label, source,
                                 "unknown URL scheme %r: expected https:// (or a local dir://, this://)" % scheme,
                                 WARNING))
    return found


def package_findings(summary):
    removed = set(summary.get("ignored_packages") or []) | set(summary.get("deleted_packages") or [])
    installed = set(summary.get("packages") or []) | set(summary.get("bootstrap_packages") or [])
    found = []
    for name in sorted(installed - removed):
        if name in OPERATOR_ACCESS_PACKAGES:
            found.append(finding("packages", name, "operator access: %s; <ignore> or remove the package"
                                 % OPERATOR_ACCESS_PACKAGES[name]))
    for user in summary.get("users") or []:
        if not user.get("password_set"):
            continue
        if _login_shell(user):
            found.append(finding("users", user["name"], "has a login password and a login shell (%s): with any console "
                                 "getty (the EC2 serial console) or login service that is a shell on the instance; "
                                 "lock the password or give the user /usr/sbin/nologin"
                                 % (user.get("shell") or "the default shell")))
        else:
            found.append(finding("users", user["name"], "has a login password: with a console getty or a login "
                                 "service it is a way in", WARNING))
    return found


def _login_shell(user):
    """Whether a <user> gets a shell one can log in with: a summary that does not say ("shell" absent) is not known
    to; no shell attribute means useradd's default (/bin/sh or /bin/bash), which is one."""
    if "shell" not in user:
        return False
    shell = user.get("shell")
    return not shell or os.path.basename(shell) not in _NO_LOGIN_SHELLS


def _unit_names(text):
    return [word.strip("'\"") for word in text.split() if not word.startswith("-")]


def _access_unit(name):
    base = name[:-len(".service")] if name.endswith(".service") else name
    return bool(_ACCESS_UNIT.match(base))


def overlay_and_script_findings(description_dir):
    """Units that give access, enabled by the overlay (wants links, presets) or by the description's scripts."""
    if not description_dir or not os.path.isdir(description_dir):
        return []
    found = []
    systemd_dirs = [os.path.join(description_dir, "root", "etc", "systemd", "system"),
                    os.path.join(description_dir, "root", "usr", "lib", "systemd", "system")]
    for base in systemd_dirs:
        if not os.path.isdir(base):
            continue
        for dirpath, _dirnames, filenames in os.walk(base):
            if not dirpath.endswith((".wants", ".requires")):
                continue
            for name in sorted(filenames):
                if _access_unit(name):
                    rel = os.path.relpath(os.path.join(dirpath, name), description_dir)
                    found.append(finding(rel, name, "operator access: the overlay enables %s" % name))
    for preset_dir in (os.path.join(description_dir, "root", "etc", "systemd", "system-preset"),
                       os.path.join(description_dir, "root", "usr", "lib", "systemd", "system-preset")):
        for path in _regular_files(preset_dir):
            for line in _read(path).splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "enable" and _access_unit(words[1].rstrip("*")):
                    found.append(finding(os.path.relpath(path, description_dir), line.strip(),
                                         "operator access: the preset enables %s" % words[1]))
    for script in _SCRIPTS:
        path = os.path.join(description_dir, script)
        if not os.path.isfile(path):
            continue
        text = _read(path)
        for match in _SYSTEMCTL.finditer(text):
            for unit in _unit_names(match.group(2)):
                if _access_unit(unit):
                    found.append(finding(script, match.group(0).strip(),
                                         "operator access: the script runs systemctl %s %s" % (match.group(1), unit)))
        for match in _ADD_WANTS.finditer(text):
            for unit in _unit_names(match.group(2)):
                if _access_unit(unit):
                    found.append(finding(script, match.group(0).strip(),
                                         "operator access: the script runs systemctl %s for %s" % (match.group(1), unit)))
        for match in _WANTS_LINK.finditer(text):
            unit = match.group(3) or os.path.basename(match.group(1))
            if _access_unit(unit.strip("'\"")):
                found.append(finding(script, match.group(0).strip(),
                                     "operator access: the script links %s into %s" % (unit, match.group(2))))
        for match in _INSERT_SERVICE.finditer(text):
            if _access_unit(match.group(1)):
                found.append(finding(script, match.group(0).strip(),
                                     "operator access: the script enables %s" % match.group(1)))
    return found


def description_findings(summary, description_dir=None):
    """Every finding of a loaded description (summary from kiwi_description.summarize) and its directory."""
    build = summary.get("build_type") or {}
    found = cmdline_findings(build.get("kernelcmdline") or "", description_dir)
    found += repository_findings(summary.get("repositories") or [])
    found += package_findings(summary)
    found += overlay_and_script_findings(description_dir)
    return found


def line(item):
    """A finding as one readable line."""
    return "%s %s: %s" % (item["setting"], item["value"], item["reason"])
