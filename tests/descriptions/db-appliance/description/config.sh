#!/bin/bash
# Database appliance: runs inside the image root once packages, users and root/ are in place.
set -euxo pipefail

systemctl enable set-hostname-imds.service
systemctl enable postgresql.service
systemctl enable db-backup.timer
systemctl enable attestable-userspace-marker.service
# Maintenance that must not run on a read-only, measured appliance.
systemctl mask apt-daily.timer
systemctl mask apt-daily-upgrade.timer
systemctl mask e2scrub_all.timer
systemctl mask fstrim.timer
systemctl mask systemd-firstboot.service || true

# Groups and ownership: root/ arrives as root:root; chown clears set-id bits, so the modes follow it.
getent group dbops >/dev/null || groupadd -g 2001 dbops
chown -R dbadmin:dbops /etc/db-appliance
find /etc/db-appliance -type d -exec chmod 0750 {} +
find /etc/db-appliance -type f -exec chmod 0640 {} +
chown postgres:postgres /etc/postgresql/15/main/conf.d/appliance.conf
chmod 0640 /etc/postgresql/15/main/conf.d/appliance.conf

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
