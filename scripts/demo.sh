#!/usr/bin/env bash
# The job behind `make demo`: the whole pipeline on a local default, no AWS account needed.
# AWS is a moto server on 127.0.0.1 started here and stopped on exit; everything else is real.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1

mkdir -p "$root/.cache"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" > "$root/.cache/moto-demo.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/moto-api/" > /dev/null 2>&1 && break
  sleep 0.2
done

ansible-playbook playbooks/demo.yml -e "demo_aws_endpoint_url=http://127.0.0.1:$port" "$@"
