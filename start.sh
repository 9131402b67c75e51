#!/usr/bin/env bash
# Install (first run only) and start the BCCDMS appliance on its built-in defaults:
# creates .venv/, installs the project, builds the demo model pack into weights/demo when no
# trained pack is installed, then serves the kiosk on http://127.0.0.1:8080.
#   ./start.sh                 install if needed, then serve
#   ./start.sh --install-only  install if needed and stop (CI, technicians)
set -euo pipefail
cd "$(dirname "$0")"
serve=1
[ "${1:-}" = "--install-only" ] && serve=0

say() { printf '==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The Debian packages the appliance needs at run time, only those missing: python3-venv for
# .venv, fonts-noto-core for Ethiopic text on the kiosk, the print page and the PDF (the
# self-check fails without it). What only the tests need is installed by .ci/run and test.sh.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if command -v dpkg-query >/dev/null; then
  installed fonts-noto-core || missing+=(fonts-noto-core)
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq || say "apt-get update failed; trying with the package lists already here"
  as_root apt-get install -y "${missing[@]}"
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
# Reinstall when pyproject.toml changed since the last install.
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing the appliance and its model tools into .venv (first time: several minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
  .venv/bin/python -m pip install --quiet -e '.[export,dev]'
  touch .venv/.installed
fi
if [ ! -f weights/demo/manifest.json ] && ! .venv/bin/appliance models list --quiet >/dev/null 2>&1; then
  say "no model pack installed: building the demo pack into weights/demo (a few minutes)"
  .venv/bin/bccdms-export demo --out weights/demo
fi
if [ "$serve" = 1 ]; then
  say "starting the appliance on http://127.0.0.1:8080 (Ctrl+C stops it)"
  exec .venv/bin/appliance serve
fi
