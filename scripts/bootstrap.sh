#!/usr/bin/env bash
# Create ./.venv and install the pinned dependencies when they are missing or the requirements changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
stamp=.venv/.installed-$want
[ -f "$stamp" ] && exit 0
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "bagtrack needs Python 3.11 or newer")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
rm -f .venv/.installed-*
touch "$stamp"
echo "bootstrap: .venv ready"
