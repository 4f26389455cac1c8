# Sourced by the README commands: create .venv on first use and install stelab into it.
# torch is pinned to the CPU build that lies on this machine's disk; pyproject.toml stays open to newer torch.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import stelab, torch, pytest, hypothesis, xdist" 2>/dev/null; then
    echo "[stelab] setting up $VENV ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -q "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg
