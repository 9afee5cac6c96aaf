#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Assemble a Unified Kernel Image from real parts, reproducibly:
#   the Debian cloud kernel (apt-get download, never installed), a busybox-static initrd, the systemd stub 252,
#   glued with objcopy (.osrel/.cmdline/.linux/.initrd), PE TimeDateStamp zeroed so two builds are identical.
# Usage: scripts/build-uki.sh [--arch x86_64|aarch64] [--sign KEY CERT] [--cmdline TEXT] OUTPUT.efi
#   --sign KEY CERT  sign the result with sbsign (the unsigned UKI stays reproducible; the key is only read)
#   --arch aarch64   arm64 parts (kernel, stub linuxaa64.efi.stub, busybox) via apt-get download from a private
#                    apt state under the cache (the host's dpkg gets no foreign architecture), glued with
#                    aarch64-linux-gnu-objcopy (Debian binutils-aarch64-linux-gnu)
# Downloaded parts are cached under .cache/uki-parts/ (override with UKI_CACHE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${UKI_CACHE:-$root/.cache/uki-parts}
arch=x86_64
cmdline=""
sign_key="" sign_cert=""
objcopy_opts=()

usage() { echo "usage: $0 [--arch x86_64|aarch64] [--sign KEY CERT] [--cmdline TEXT] OUTPUT.efi" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || usage; arch=$2; shift 2 ;;
    --sign) [ $# -ge 3 ] || usage; sign_key=$2; sign_cert=$3; shift 3 ;;
    --cmdline) [ $# -ge 2 ] || usage; cmdline=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || usage
output=$1
case "$arch" in
  x86_64) deb_arch=amd64 objcopy=objcopy console=ttyS0 ;;
  aarch64) deb_arch=arm64 objcopy=aarch64-linux-gnu-objcopy console=ttyAMA0
           # the stub's own layout: 4 KiB file alignment (file offset == RVA)
           objcopy_opts+=(--file-alignment 0x1000) ;;
  *) echo "--arch: $arch is not supported (expected x86_64 or aarch64)" >&2; exit 2 ;;
esac
cmdline=${cmdline:-"console=$console panic=-1 quiet"}
command -v "$objcopy" >/dev/null || { echo "missing $objcopy (install binutils-aarch64-linux-gnu)" >&2; exit 1; }
if [ -n "$sign_key" ]; then
  for f in "$sign_key" "$sign_cert"; do [ -f "$f" ] || { echo "--sign: no such file: $f" >&2; exit 1; }; done
fi

mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-uki.XXXXXX")
trap 'rm -rf "$work"' EXIT

apt_opts=()
if [ "$arch" = aarch64 ]; then
  # A private apt state that sees arm64 as the native architecture: the host's dpkg stays untouched.
  apt_state="$cache/apt-arm64"
  mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial"
  apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Dir::State::Lists="$apt_state/lists"
            -o Dir::Cache="$apt_state/cache" -o Dir::State::status=/dev/null)
fi

kernel_package() {
  apt-cache "${apt_opts[@]}" depends "linux-image-cloud-$deb_arch" 2>/dev/null \
    | awk '/Depends: linux-image-/ {print $2; exit}'
}

kernel_image() {
  # The metapackage names the current kernel package; cache its vmlinuz by version.
  local pkg
  pkg=$(kernel_package)
  if [ -z "$pkg" ]; then
    apt-get "${apt_opts[@]}" update -qq >&2
    pkg=$(kernel_package)
  fi
  [ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-$deb_arch's kernel package" >&2; exit 1; }
  local ver=${pkg#linux-image-}
  local cached="$cache/vmlinuz-$ver"
  if [ ! -s "$cached" ]; then
    (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
    dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kernel"
    cp "$work/kernel/boot/vmlinuz-$ver" "$cached.tmp" && mv "$cached.tmp" "$cached"
  fi
  echo "$cached"
}

foreign_file() {
  # PKG PATH-IN-PACKAGE: a file of an arm64 package, cached by package version.
  local pkg=$1 inner=$2 ver
  ver=$(apt-cache "${apt_opts[@]}" show "$pkg" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
  [ -n "$ver" ] || { echo "cannot find $pkg for $deb_arch" >&2; exit 1; }
  local cached; cached="$cache/$deb_arch-$(basename "$inner")-${ver//[:~]/_}"
  if [ ! -s "$cached" ]; then
    (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
    dpkg-deb -x "$work"/"$pkg"_*"$deb_arch".deb "$work/$pkg"
    cp "$work/$pkg/$inner" "$cached.tmp" && mv "$cached.tmp" "$cached"
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
if [ "$arch" = aarch64 ]; then
  stub=${UKI_STUB:-$(foreign_file systemd-boot-efi usr/lib/systemd/boot/efi/linuxaa64.efi.stub)}
  busybox=${UKI_BUSYBOX:-$(foreign_file busybox-static bin/busybox)}
else
  stub=${UKI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
  busybox=${UKI_BUSYBOX:-/bin/busybox}
fi
for f in "$stub" "$busybox"; do
  [ -f "$f" ] || { echo "missing $f (install systemd-boot-efi and busybox-static)" >&2; exit 1; }
done
build_initrd
printf 'NAME="Attestable AMI test UKI"\nID=attestable-test\nVERSION="1"\nPRETTY_NAME="Attestable AMI test UKI"\n' > "$work/os-release"
printf '%s' "$cmdline" > "$work/cmdline"
# .initrd goes on the next 16 MiB boundary after the kernel: sections must not overlap (arm64's kernel is > 16 MiB).
initrd_vma=$(printf '0x%x' $(( (0x2000000 + $(stat -c %s "$kernel") + 0xffffff) / 0x1000000 * 0x1000000 )))
"$objcopy" "${objcopy_opts[@]}" \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$kernel" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$work/initrd.cpio" --change-section-vma .initrd="$initrd_vma" \
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
