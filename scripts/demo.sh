#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The job behind `make demo`: attestable.ami.build_and_publish, then attestable.ami.authorize, with the local
# profile (playbooks/vars/local.yml): this machine is the builder, a moto server on 127.0.0.1 is AWS.
# Before them a demo KMS key is created; after them the tamper proofs run and one summary is printed.
# With AWS_ENDPOINT_URL already set (a moto server you run), that endpoint is used and kept; otherwise a new
# moto server is started here and stopped on exit. Extra arguments go to ansible-playbook (e.g. -e var=value).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-demo}
export AWS_DEFAULT_REGION=us-east-1

fresh=false
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  mkdir -p "$root/.cache"
  port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  moto_server -H 127.0.0.1 -p "$port" > "$root/.cache/moto-demo.log" 2>&1 &
  moto_pid=$!
  trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$port/moto-api/" > /dev/null 2>&1 && break
    sleep 0.2
  done
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  fresh=true
fi
echo "demo: AWS is the moto server at $AWS_ENDPOINT_URL ($([ "$fresh" = true ] && echo 'started for this run' || echo 'given'))"

ansible-playbook \
  playbooks/demo_prepare.yml attestable.ami.build_and_publish attestable.ami.authorize playbooks/demo_verify.yml \
  -e @playbooks/vars/local.yml -e "demo_endpoint_fresh=$fresh" "$@"
