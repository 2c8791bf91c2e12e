#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then lint, type-check and test.
# Idempotent: a second run reuses the virtual environment and installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# A real browser for the Studio tests: Debian's Chromium (Playwright's own download can't run here).
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

PY=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install --quiet uv
fi
[ -d .venv ] || uv venv --quiet --python "$PY" .venv
uv pip install --quiet --python .venv --compile-bytecode -e '.[test]'

.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy src
.venv/bin/pytest -q "$@"
