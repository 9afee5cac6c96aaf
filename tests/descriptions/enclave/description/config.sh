#!/bin/bash
# Enclave node: nothing to enable but the console marker; every way in masked.
set -euxo pipefail

systemctl enable attestable-userspace-marker.service
systemctl mask ssh.service
systemctl mask ssh.socket
systemctl mask sshd.service
systemctl mask getty.target
systemctl mask serial-getty@ttyS0.service
systemctl mask systemd-firstboot.service || true

# apt has no <ignore>: refuse the image if an access path got installed anyway.
found=
for package in openssh-server dropbear dropbear-bin tinysshd telnetd amazon-ssm-agent cloud-init ec2-instance-connect ec2-hibinit-agent grub-efi-amd64 grub-efi-arm64 grub-pc grub-common; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)" = installed ]; then
        found="$found $package"
    fi
done
if [ -n "$found" ]; then
    echo "config.sh: packages the image must not hold are installed:$found" >&2
    exit 1
fi
