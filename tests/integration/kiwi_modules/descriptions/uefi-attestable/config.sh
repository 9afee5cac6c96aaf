#!/bin/bash
set -e
systemctl mask systemd-firstboot.service || true
