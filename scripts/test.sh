#!/usr/bin/env bash
# Lint, type-check and run the test suite. Extra arguments go to pytest
# (e.g. `-m slow` for the slow tests only, `-m ''` for everything).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
