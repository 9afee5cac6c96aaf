#!/usr/bin/env bash
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The test suite behind `make test`. Usage: scripts/test.sh [all|unit|py39|sanity|lint|integration]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ATTESTABLE_VECTORS="${ATTESTABLE_VECTORS:-$(cd "$root/.." && pwd)/shared/vectors}"
stage=${1:-all}

collection_copy() {
  # ansible-test needs the tree under ansible_collections/<namespace>/<name>/ as a real directory.
  # Outside this checkout: inside it, ansible-test would ask git, which ignores .build, and find no files.
  local dest; dest="$(mktemp -d "${TMPDIR:-/tmp}/attestable-ami-sanity.XXXXXX")/ansible_collections/attestable/ami"
  mkdir -p "$dest"
  rsync -a --delete --exclude .venv --exclude .venv39 --exclude .build --exclude .cache --exclude .git \
    --exclude .pytest_cache --exclude .hypothesis --exclude __pycache__ --exclude artifacts ./ "$dest/"
  # amazon.aws comes with the ansible package; sanity's import and doc tests need it beside this collection.
  local amazon; amazon=$(python -c 'import ansible_collections.amazon.aws as m, os; print(os.path.dirname(list(m.__path__)[0]))')
  mkdir -p "$dest/../../amazon"
  rsync -a "$amazon/" "$dest/../../amazon/"
  echo "$dest"
}

run_unit() {
  echo "== unit tests (Python $(python --version 2>&1 | cut -d' ' -f2))"
  python -m pytest -q tests/unit
}

run_py39() {
  # Module code runs on AL2023's Python 3.9: check the syntax level, and run the builder-side unit tests there.
  echo "== Python 3.9 compatibility"
  vermin --no-tips --violations -t=3.9- plugins/module_utils plugins/modules
  local py39=${PYTHON39:-}
  if [ -z "$py39" ]; then
    for candidate in "$HOME"/.pyenv/versions/3.9*/bin/python3 /usr/bin/python3.9; do
      [ -x "$candidate" ] && py39=$candidate
    done
  fi
  if [ -z "$py39" ] || [ ! -x "$py39" ]; then
    echo "   no Python 3.9 interpreter on this machine: syntax-level check only"
    return 0
  fi
  if [ ! -x .venv39/bin/python ]; then "$py39" -m venv .venv39; fi
  local want; want=$(sha256sum requirements/python39.txt | cut -d' ' -f1)
  if [ "$(cat .venv39/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    .venv39/bin/pip install -q -r requirements/python39.txt && echo "$want" > .venv39/.requirements.sha256
  fi
  .venv39/bin/python -m pytest -q -p no:cacheprovider tests/unit/plugins/module_utils
}

run_sanity() {
  echo "== ansible-test sanity"
  local dest rc=0; dest=$(collection_copy)
  (cd "$dest" && ansible-test sanity --local --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
     --color no --skip-test shebang) || rc=$?
  rm -rf "${dest%/ansible_collections/attestable/ami}"
  return "$rc"
}

run_lint() {
  echo "== ansible-lint (production profile)"
  ansible-lint --profile production --offline -q
}

run_integration() {
  echo "== integration tests (real qemu/OVMF/swtpm, kiwi-ng, moto server)"
  python -m pytest -q tests/integration
}

case "$stage" in
  all) run_unit; run_py39; run_sanity; run_lint; run_integration ;;
  unit) run_unit ;;
  py39) run_py39 ;;
  sanity) run_sanity ;;
  lint) run_lint ;;
  integration) run_integration ;;
  *) echo "unknown stage: $stage (expected all, unit, py39, sanity, lint or integration)" >&2; exit 2 ;;
esac
