#!/usr/bin/env bash
# The whole test suite (and lint). Extra args go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
ruff check src tests benchmarks scripts
exec python -m pytest -n 2 --dist loadfile "$@"
