#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Prepare this machine for `make demo` / `make test`: Debian packages that are missing, the .venv,
# and the offline pip bootstrap that ansible-test sanity needs. Safe to run again: it only does what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

missing=()
for pkg in $(sed -e 's/#.*//' requirements/apt/*.txt | tr -s ' \n' '\n' | sort -u); do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements/python.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements/python.txt
  echo "$want" > "$stamp"
fi

# ansible-test sanity downloads get-pip.py from the internet; offline, a script that uses ensurepip does the same job.
pip_version=$(grep -ohP "pip='\\K[0-9.]+" .venv/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -n1 || true)
if [ -n "$pip_version" ]; then
  mkdir -p "$HOME/.ansible/test/cache"
  cat > "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py" <<'PY'
# Written by scripts/bootstrap.sh: stands in for get-pip.py, which ansible-test would download.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
packages = [a for a in sys.argv[1:] if not a.startswith("-")]
if packages:
    subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"] + packages)
PY
fi

# KIWI mounts the EFI system partition of a UEFI disk: without a vfat driver, scripts/vfat/'s helpers stand in.
"${sudo_cmd[@]}" scripts/vfat/install-helpers.sh

# ansible finds this checkout as attestable.ami through ansible.cfg's collections_path.
link=.build/collections/ansible_collections/attestable/ami
if [ ! -L "$link" ]; then
  mkdir -p "$(dirname "$link")"
  ln -sfn "$root" "$link"
fi
