#!/usr/bin/env bash
# Assemble a Unified Kernel Image from real parts, reproducibly:
#   the Debian cloud kernel (apt-get download, never installed), a busybox-static initrd, the systemd stub 252,
#   glued with objcopy (.osrel/.cmdline/.linux/.initrd), PE TimeDateStamp zeroed so two builds are identical.
# Usage: scripts/build-uki.sh [--sign KEY CERT] [--cmdline TEXT] OUTPUT.efi
#   --sign KEY CERT  sign the result with sbsign (the unsigned UKI stays reproducible; the key is only read)
# Downloaded parts are cached under .cache/uki-parts/ (override with UKI_CACHE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${UKI_CACHE:-$root/.cache/uki-parts}
stub=${UKI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
busybox=${UKI_BUSYBOX:-/bin/busybox}
cmdline="console=ttyS0 panic=-1 quiet"
sign_key="" sign_cert=""

usage() { echo "usage: $0 [--sign KEY CERT] [--cmdline TEXT] OUTPUT.efi" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --sign) [ $# -ge 3 ] || usage; sign_key=$2; sign_cert=$3; shift 3 ;;
    --cmdline) [ $# -ge 2 ] || usage; cmdline=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
output=$1
for f in "$stub" "$busybox"; do
  [ -f "$f" ] || { echo "missing $f (install systemd-boot-efi and busybox-static)" >&2; exit 1; }
done
if [ -n "$sign_key" ]; then
  for f in "$sign_key" "$sign_cert"; do [ -f "$f" ] || { echo "--sign: no such file: $f" >&2; exit 1; }; done
fi

mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-uki.XXXXXX")
trap 'rm -rf "$work"' EXIT

kernel_image() {
  # The metapackage names the current kernel package; cache its vmlinuz by version.
  local pkg
  if ! pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}') \
     || [ -z "$pkg" ]; then
    apt-get update -qq >&2
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-amd64's kernel package" >&2; exit 1; }
  local ver=${pkg#linux-image-}
  local cached="$cache/vmlinuz-$ver"
  if [ ! -s "$cached" ]; then
    (cd "$work" && apt-get download "$pkg" >&2)
    dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kernel"
    cp "$work/kernel/boot/vmlinuz-$ver" "$cached.tmp" && mv "$cached.tmp" "$cached"
  fi
  echo "$cached"
}

build_initrd() {
  # /init prints the PCRs the kernel can see, then powers off; the host never depends on it.
  local tree="$work/initrd"
  mkdir -p "$tree/bin" "$tree/proc" "$tree/sys" "$tree/dev"
  cp "$busybox" "$tree/bin/busybox"
  cat > "$tree/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
for bank in sha384 sha256; do
  for n in 4 7 12; do
    f=/sys/class/tpm/tpm0/pcr-$bank/$n
    [ -r "$f" ] && echo "guest-pcr $bank $n $(/bin/busybox cat $f)"
  done
done
echo "guest-init done"
/bin/busybox poweroff -f
EOF
  chmod 0755 "$tree/init" "$tree/bin/busybox"
  find "$tree" -exec touch -h -d @0 {} +
  (cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) > "$work/initrd.cpio"
}

kernel=$(kernel_image)
build_initrd
printf 'NAME="Attestable AMI test UKI"\nID=attestable-test\nVERSION="1"\nPRETTY_NAME="Attestable AMI test UKI"\n' > "$work/os-release"
printf '%s' "$cmdline" > "$work/cmdline"
objcopy \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$kernel" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$work/initrd.cpio" --change-section-vma .initrd=0x3000000 \
  "$stub" "$work/uki.efi"
# objcopy stamps the build time into the COFF header (and a checksum over it into the optional header):
# zero both so the image (and PCR4) is reproducible. UEFI firmware checks neither.
python3 - "$work/uki.efi" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(0x3C)
    pe = struct.unpack("<I", f.read(4))[0]
    f.seek(pe)
    if f.read(4) != b"PE\0\0":
        sys.exit("objcopy output is not a PE image")
    f.seek(pe + 8)
    f.write(b"\0\0\0\0")  # COFF TimeDateStamp
    f.seek(pe + 24 + 64)
    f.write(b"\0\0\0\0")  # OptionalHeader CheckSum
EOF
if [ -n "$sign_key" ]; then
  sbsign --key "$sign_key" --cert "$sign_cert" --output "$work/uki.signed.efi" "$work/uki.efi" >&2
  mv "$work/uki.signed.efi" "$work/uki.efi"
fi
mkdir -p "$(dirname "$output")"
mv "$work/uki.efi" "$output"
echo "$output"
