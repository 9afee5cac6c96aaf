#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Install scripts/vfat/'s mount.vfat + umount.ramfs into SBIN (default /sbin, where mount(8) looks for helpers)
# only when the kernel has no vfat (FILESYSTEMS, default /proc/filesystems), and never over a helper that is
# not ours. Says what it installed or why not. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sbin=${1:-/sbin}
filesystems=${FILESYSTEMS:-/proc/filesystems}

has_vfat() { grep -qw vfat "$filesystems"; }
if has_vfat; then
  exit 0
fi
if [ "$filesystems" = /proc/filesystems ] && command -v modprobe > /dev/null && modprobe -q vfat 2> /dev/null && has_vfat; then
  exit 0
fi

foreign=
for helper in mount.vfat umount.ramfs; do
  if [ -e "$sbin/$helper" ] && ! grep -q attestable-vfat-helper "$sbin/$helper" 2> /dev/null; then
    foreign="$foreign $sbin/$helper"
  fi
done
if [ -n "$foreign" ]; then
  echo "vfat helpers: the kernel has no vfat, but$foreign exists and is not ours: left as it is, nothing installed"
  exit 0
fi
for helper in mount.vfat umount.ramfs; do
  if ! cmp -s "$here/$helper" "$sbin/$helper"; then
    install -m 0755 "$here/$helper" "$sbin/$helper"
    echo "vfat helpers: the kernel has no vfat: installed $sbin/$helper (a FAT mounts as a ramfs copy, written back on unmount)"
  fi
done
