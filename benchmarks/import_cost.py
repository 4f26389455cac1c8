"""What starting stelab costs: ``import torch``, ``import stelab``, ``stelab --version`` and ``stelab --help``.

Each case is a fresh interpreter (``sys.executable``), timed in wall clock from start to exit; the cases take turns
(one of each per round, the order rotated every round) so that a change in machine load hits them all alike, after
one untimed warm-up round (file cache). Reported: the median and the minimum over ``--repeats`` rounds, each case's
median minus that of ``import torch`` (what stelab adds to torch), and which heavy modules the case loaded (torch,
scipy, matplotlib, stelab.experiments; looked up in ``sys.modules`` after the case ran, in a separate run).

``import stelab`` loads its public names on first use (PEP 562); ``stelab: every public name`` is ``import stelab``
followed by ``getattr`` of every name of ``stelab.__all__``: the cost of the whole public API.

    python benchmarks/import_cost.py --repeats 7 --out runs/bench-import-cost
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from stelab.io import markdown_table, write_json, write_text

# name -> the code the interpreter runs (argv of ``python -c``); a CLI case runs ``python -m stelab ARGS``
CASES = {
    "python": ("-c", "pass"),
    "import torch": ("-c", "import torch"),
    "import stelab": ("-c", "import stelab"),
    "stelab: every public name": ("-c", "import stelab\nfor name in stelab.__all__: getattr(stelab, name)"),
    "stelab --version": ("-m", "stelab", "--version"),
    "stelab --help": ("-m", "stelab", "--help"),
}
HEAVY = ("torch", "scipy", "matplotlib", "stelab.experiments")
# The same case, then the heavy modules it left in sys.modules, as JSON on the last line of stdout.
_PROBE = """
import json, runpy, sys
args = sys.argv[1:]
try:
    if args[0] == "-c":
        exec(compile(args[1], "<case>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(json.dumps([m for m in HEAVY if m in sys.modules]))
"""


def run_once(case: tuple[str, ...]) -> float:
    """Wall-clock seconds of one fresh interpreter running ``case``, output discarded."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *case], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heavy_modules(case: tuple[str, ...]) -> list[str]:
    """The modules of :data:`HEAVY` that ``case`` imports."""
    code = f"HEAVY = {HEAVY!r}\n{_PROBE}"
    out = subprocess.run([sys.executable, "-c", code, *case], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(names: list[str], repeats: int) -> dict[str, list[float]]:
    """``repeats`` timings of every case, interleaved round by round (the order rotated), after a warm-up round."""
    for name in names:
        run_once(CASES[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(run_once(CASES[name]))
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (one run of every case each)")
    p.add_argument("--out", default=None, help="folder for results.json and results.md (default runs/bench-...)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = measure(args.cases, args.repeats)
    torch_median = statistics.median(seconds["import torch"]) if "import torch" in seconds else None
    rows = []
    for name in args.cases:
        median = statistics.median(seconds[name])
        rows.append({"case": name, "seconds": seconds[name], "median_s": median, "min_s": min(seconds[name]),
                     "above_torch_s": None if torch_median is None else median - torch_median,
                     "heavy_modules": heavy_modules(CASES[name])})
    table = markdown_table(
        ["case", "median s", "min s", "median - import torch (s)", "loads"],
        [[r["case"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
          "-" if r["above_torch_s"] is None else f"{r['above_torch_s']:+.3f}", ", ".join(r["heavy_modules"]) or "-"]
         for r in rows])
    header = (f"import_cost: fresh interpreters ({sys.executable}, Python {sys.version.split()[0]}), median of "
              f"{args.repeats} interleaved rounds after a warm-up\n\n")
    print("\n" + header + table)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench-import-cost-{stamp}")
    write_json(out / "results.json", {"python": sys.version.split()[0], "repeats": args.repeats, "rows": rows})
    write_text(out / "results.md", header + table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
