# Sourced by the README commands: create .venv on first use and install stelab into it.
# torch is pinned to the CPU build that lies on this machine's disk; pyproject.toml stays open to newer torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# STELAB_EXTRAS: the optional extras this command needs besides dev (scripts/test.sh: all that the tests exercise).
EXTRAS="dev${STELAB_EXTRAS:+,$STELAB_EXTRAS}"
NEED="stelab torch pytest hypothesis xdist ${STELAB_MODULES:-}"
# find_spec, not import: cheap (importing ray alone takes seconds) and enough to tell whether a pip install is due
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))" $NEED 2>/dev/null; then
    echo "[stelab] setting up $VENV ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg
