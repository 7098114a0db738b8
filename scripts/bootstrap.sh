#!/usr/bin/env bash
# Create .venv with the pinned dependencies, once; again only when the pins change.
# Needs nothing but python3.11 (or python3 if it is 3.11) on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "bootstrap: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
stamp=.venv/.pins-$(cat requirements.txt requirements-dev.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi
echo "bootstrap: installing pinned dependencies into .venv (first time takes a minute)"
log=.venv/bootstrap.log
pip_install() { .venv/bin/python -m pip install "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "bootstrap: pip install failed, log above" >&2; exit 1; }; }
: >"$log"
pip_install --upgrade "pip==26.3"
pip_install -r requirements-dev.txt -c constraints.txt
pip_install --no-deps --no-build-isolation -e .
rm -f .venv/.pins-*
touch "$stamp"
echo "bootstrap: .venv ready"
