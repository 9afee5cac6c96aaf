#!/bin/bash
# CI runner image: the attestable hook, unchanged (UKI as the firmware boot file, veritytab, PCR prediction).
# KIWI calls this after installing the boot loader, outside the image root, in the image root directory,
# with the disk image file and the boot device node: edit_boot_install.sh DISK BOOT_DEVICE.
# It makes the firmware boot the UKI directly (as AWS's attestable sample does), then puts the final EFI
# binary, the /etc/veritytab its initrd carries and the image's own PCR prediction next to the disk image.
# One template for every distribution: objcopy and lsinitrd come from the
# image (binutils and dracut are in both package sets); only AL2023 has nitro-tpm-pcr-compute. On a builder without
# vfat, `mount` below goes through the scripts/vfat/ helpers (the ESP as a ramfs copy, written back on unmount).
set -euo pipefail

disk=$1
boot_device=$2
image_root=$PWD
target_dir=$(dirname "$disk")
artifact=${disk%.raw}
efi_boot_file=BOOTX64.EFI

# The EFI system partition is the vfat partition of the disk KIWI still has mapped.
base=${boot_device%p[0-9]*}
esp=
for part in "$base"p[0-9]*; do
    if [ "$(blkid -o value -s TYPE "$part" 2>/dev/null || true)" = vfat ]; then
        esp=$part
        break
    fi
done
if [ -z "$esp" ]; then
    echo "edit_boot_install.sh: no vfat (EFI system) partition beside $boot_device" >&2
    exit 1
fi

work=$(mktemp -d "$image_root/tmp/edit-boot-install.XXXXXX")
cleanup() {
    if mountpoint -q "$work/esp"; then umount "$work/esp"; fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/esp"
mount "$esp" "$work/esp"

shopt -s nullglob
set -- "$work"/esp/EFI/Linux/*.efi
if [ "$#" -ne 1 ]; then
    echo "edit_boot_install.sh: expected exactly one UKI in EFI/Linux, found $#" >&2
    exit 1
fi
mkdir -p "$work/esp/EFI/BOOT"
cp "$1" "$work/esp/EFI/BOOT/$efi_boot_file"
rm -rf "$work/esp/EFI/Linux" "$work/esp/EFI/systemd" "$work/esp/loader"
cp "$work/esp/EFI/BOOT/$efi_boot_file" "$artifact.efi"
sync "$work/esp"
umount "$work/esp"

# The root hash lives in /etc/veritytab inside the UKI's initrd: extract it with the image's own tools.
rel=${work#"$image_root"}
cp "$artifact.efi" "$work/uki.efi"
if [ -x "$image_root/usr/bin/objcopy" ]; then
    chroot "$image_root" objcopy -O binary --only-section=.initrd "$rel/uki.efi" "$rel/initrd.img"
elif command -v objcopy > /dev/null; then
    objcopy -O binary --only-section=.initrd "$work/uki.efi" "$work/initrd.img"
else
    echo "edit_boot_install.sh: objcopy (binutils) is in neither the image nor the builder" >&2
    exit 1
fi
if chroot "$image_root" lsinitrd -f etc/veritytab "$rel/initrd.img" > "$work/veritytab" && [ -s "$work/veritytab" ]; then
    cp "$work/veritytab" "$artifact.veritytab"
else
    echo "edit_boot_install.sh: the UKI's initrd carries no /etc/veritytab" >&2
    exit 1
fi

# Reference measurements from the image's own tool (the builder has the image's architecture).
if [ -x "$image_root/usr/bin/nitro-tpm-pcr-compute" ]; then
    chroot "$image_root" /usr/bin/nitro-tpm-pcr-compute --image "$rel/uki.efi" > "$target_dir/pcr_measurements.json"
fi
