#!/usr/bin/env bash
# Main job: the theory lab of Yin et al. (2019), self-contained, no download. Extra args go to `stelab theory`.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec stelab theory "$@"
