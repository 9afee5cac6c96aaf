#!/usr/bin/env bash
# The job behind `make demo`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
exec ansible-playbook playbooks/demo.yml "$@"
