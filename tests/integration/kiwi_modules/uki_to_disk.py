#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wrap a UKI into a raw GPT disk whose EFI System partition boots it (EFI/BOOT/BOOTX64.EFI).

A stand-in for KIWI's disk output in the kiwi_build module tests (the real KIWI UEFI build is in
tests/integration/kiwi). Usage: uki_to_disk.py UKI.efi DISK.raw [--arch x86_64|aarch64]
"""
import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

from ansible_collections.attestable.ami.plugins.module_utils._boot import esp as esp_image  # noqa: E402

BOOT_NAMES = {"x86_64": "EFI/BOOT/BOOTX64.EFI", "aarch64": "EFI/BOOT/BOOTAA64.EFI"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uki")
    parser.add_argument("disk")
    parser.add_argument("--arch", choices=sorted(BOOT_NAMES), default="x86_64")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="uki-to-disk-")
    esp = os.path.join(workdir, "esp.img")
    try:
        esp_image.make_esp(esp, {BOOT_NAMES[args.arch]: args.uki})
        esp_image.make_gpt_disk(args.disk, esp)
    except esp_image.EspImageError as exc:
        sys.exit("uki-to-disk: %s" % exc)
    finally:
        if os.path.exists(esp):
            os.unlink(esp)
        os.rmdir(workdir)
    print(args.disk)


if __name__ == "__main__":
    main()
