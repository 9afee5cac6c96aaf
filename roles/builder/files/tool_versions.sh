#!/bin/sh
# Prints the versions of the image build tools on this host as one JSON object ("" where not found).
# The package database first (what dnf or apt installed), then the tool's own --version output.

pkg_version() {
    for pkg in "$@"; do
        if command -v rpm >/dev/null 2>&1 && v=$(rpm -q --qf '%{VERSION}' "$pkg" 2>/dev/null) && [ -n "$v" ]; then
            echo "$v"
            return 0
        fi
        if command -v dpkg-query >/dev/null 2>&1 && v=$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null) && [ -n "$v" ]; then
            # Debian: drop the epoch and the packaging revision (2:2.6.1-4~deb12u2 -> 2.6.1)
            echo "$v" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[~+].*$//'
            return 0
        fi
    done
    return 1
}

tool_version() {
    command -v "$1" >/dev/null 2>&1 || return 1
    "$@" --version 2>/dev/null | grep -o '[0-9][0-9]*\(\.[0-9][0-9]*\)\{1,\}' | head -n 1
}

# The schema version the installed KIWI reads (it upgrades older descriptions, refuses newer ones).
kiwi_schema() {
    ng=$(command -v kiwi-ng) || return 1
    py=$(sed -n '1s/^#! *//p' "$ng")
    case "$py" in
        */env\ *) py=${py#* } ;;
        "") py=python3 ;;
    esac
    dir=$($py -c 'import os, kiwi; print(os.path.dirname(kiwi.__file__))' 2>/dev/null) || return 1
    sed -n '/name="schemaversion"/,/<\/attribute>/s/.*<value>\([0-9.]*\)<\/value>.*/\1/p' "$dir/schema/kiwi.rng" | head -n 1
}

first() {
    for v in "$@"; do
        [ -n "$v" ] && { echo "$v"; return; }
    done
}

kiwi=$(first "$(pkg_version python3-kiwi)" "$(tool_version kiwi-ng)")
erofs=$(first "$(pkg_version erofs-utils)" "$(tool_version mkfs.erofs)")
cryptsetup=$(first "$(pkg_version veritysetup cryptsetup cryptsetup-bin)" "$(tool_version veritysetup)")
sdboot=$(first "$(pkg_version systemd-boot-unsigned systemd-boot systemd-boot-efi)" "$(tool_version bootctl)")
nitro=$(pkg_version aws-nitro-tpm-tools)
schema=$(kiwi_schema)

printf '{"kiwi": "%s", "kiwi_schema": "%s", "erofs-utils": "%s", "cryptsetup": "%s", "systemd-boot": "%s", "aws-nitro-tpm-tools": "%s"}\n' \
    "$kiwi" "$schema" "$erofs" "$cryptsetup" "$sdboot" "$nitro"
