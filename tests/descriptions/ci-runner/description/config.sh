#!/bin/bash
# CI runner image: KIWI runs this inside the image root after the packages, the users and root/ are in place.
set -euxo pipefail

# Services instead of a shell: host name from IMDS, the runner and its clean-up timer.
systemctl enable set-hostname-imds.service
systemctl enable ci-runner.service
systemctl enable ci-runner-cleanup.timer
systemctl enable attestable-userspace-marker.service
# Nothing changes packages on a running runner.
systemctl disable apt-daily.timer
systemctl disable apt-daily-upgrade.timer
systemctl mask systemd-firstboot.service || true

# The runner's group and the ownership of its tree (root/ is copied as root:root).
getent group ci >/dev/null || groupadd -g 1500 ci
chown -R root:ci /opt/ci-runner

# The runner command on the PATH.
ln -sf /opt/ci-runner/bin/ci-runner /usr/local/bin/ci-runner

# git defaults for every job.
git config --system init.defaultBranch main
git config --system safe.directory '*'

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
