#!/usr/bin/env bash
# Run the test suite (README's test command). Arguments go to pytest, e.g.
#   ./test.sh -m "not slow"      the fast subset
# The layer contracts (import-linter, [tool.importlinter] in pyproject.toml) run first; a broken
# contract fails the run.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  ./start.sh --install-only
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> installing Chromium for the browser tests (Debian packages chromium, chromium-driver)"
  # apt-get update first: on a fresh machine the package lists are empty or stale.
  if [ "$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium chromium-driver
  else sudo apt-get update && sudo apt-get install -y chromium chromium-driver; fi
fi
echo "==> layer contracts (lint-imports)"
.venv/bin/lint-imports --no-cache >/dev/null || { .venv/bin/lint-imports --no-cache; exit 1; }
# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
exec .venv/bin/python -m pytest "$@"
