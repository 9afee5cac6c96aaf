#!/bin/bash
# Records how KIWI calls the editbootinstall hook, next to the disk: the contract the AL2023 hook of the
# image_description role relies on (argument 1 the disk image in the target directory, argument 2 a partition
# node of the still-mapped disk whose siblings hold the other partitions, the image root as working directory).
set -euo pipefail
disk=$1
boot_device=$2
base=${boot_device%p[0-9]*}
{
    echo "disk=$disk"
    echo "boot_device=$boot_device"
    echo "cwd=$PWD"
    for part in "$base"p[0-9]*; do
        echo "partition=$part $(blkid -o value -s TYPE "$part" 2>/dev/null || true)"
    done
} > "${disk%.raw}.hook"
