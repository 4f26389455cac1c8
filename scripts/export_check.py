"""Export the committed networks and check every runner against PyTorch on the whole test sets.

    python scripts/export_check.py [--models lenet5-a2 ...] [--limit N] [--out results/export-check]

For each model (a run folder under results/), exports qdq, qonnx and float ONNX files, runs them (onnxruntime for
qdq and float, the qonnx package's executor for qonnx) and the integer reference (stelab.export.integer) on the test
images, and compares predictions, every activation code and the logits with PyTorch (stelab.export.verify). Writes
``results.json`` (one entry per model; a rerun of some models keeps the others) and ``report.md`` to ``--out``.
Used for REPRODUCTION.md's export section; about 20 s per LeNet-5 and 3-4 minutes per ResNet-20 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from stelab import data
from stelab.cli.export import load_run
from stelab.export.verify import verify
from stelab.io import markdown_table, write_json, write_text

MODELS = {
    "lenet5-a2": "results/export-models/lenet5-a2",
    "lenet5-w2a2": "results/export-models/lenet5-w2a2",
    "lenet5-w4a4": "results/export-models/lenet5-w4a4",
    "resnet20-a2": "results/table1-cifar10-resnet20/seed0/2bit-clipped_relu",
    "resnet20-w4a4": "results/export-models/resnet20-w4a4",
}
RUNNERS = ("qdq", "qdq-noopt", "qonnx", "float", "integer", "torch-float64")


def check(name: str, run_dir: str, limit: int, data_dir: str | None) -> dict:
    model, config = load_run(Path(run_dir))
    images, labels = data.load(config.dataset, data_dir, "test")
    n = limit or len(images)
    x = data.normalise(images[:n], *data.STATS[config.dataset])
    y = labels[:n].numpy()
    start = time.perf_counter()
    with torch.no_grad():
        torch_acc = float((model(x).argmax(1).numpy() == y).mean())
    chunk = 250 if config.model.startswith("resnet") else 2000
    entry = {"run_dir": run_dir, "dataset": config.dataset, "samples": n, "torch_accuracy": torch_acc,
             **verify(model, x, RUNNERS, chunk=chunk, labels=y)}
    entry["seconds"] = round(time.perf_counter() - start, 1)
    for fmt in RUNNERS:
        print(name, fmt, {k: v for k, v in entry[fmt].items() if k not in ("arithmetic", "int_types")}, flush=True)
    return entry


def report(results: dict) -> str:
    rows, sizes = [], []
    for name, e in results.items():
        for fmt in (f for f in RUNNERS if f in e):  # entries written before a runner was added lack it
            r = e[fmt]
            rows.append([name, fmt, f"{r['predictions_equal']}/{r['samples']}", f"{100 * r['accuracy']:.2f}",
                         f"{r['codes_differing']}/{r['codes_compared']}", r["codes_differing_first"],
                         r["codes_differing_on_documented_ties"],
                         f"{r['codes_differing_max_distance_to_threshold_alpha']:.1e}",
                         f"{r['logit_max_abs_error']:.2e}", f"{r['logit_max_error_over_bound']:.3f}"])
        sizes.append([name, e["float"]["bytes"], e["qonnx"]["bytes"], e["qdq"]["bytes"],
                      f"{e['float']['bytes'] / e['qdq']['bytes']:.2f}x",
                      ", ".join(sorted(set(e["qdq"]["int_types"].values())))])
    head = ["model", "runner", "predictions = PyTorch", "accuracy %", "codes differing", "first differences",
            "of which on documented ties",
            "max distance to threshold (alpha)", "max logit error", "error / computed bound"]
    return ("# Export check: ONNX (qdq, qonnx, float) and the integer reference against PyTorch\n\n"
            "Written by `python scripts/export_check.py`. Codes: every activation code of every test image. "
            "The logit columns are over the images whose codes all agree; the bound is verify.logit_bound.\n\n"
            + markdown_table(head, rows) + "\n## Sizes on disk (bytes)\n\n"
            + markdown_table(["model", "float", "qonnx", "qdq", "float / qdq", "qdq integer types"], sizes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--limit", type=int, default=0, help="first N test images (default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Path("results/export-check"))
    args = p.parse_args()
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.models:
        results[name] = check(name, MODELS[name], args.limit, args.data_dir)
        results = {k: results[k] for k in MODELS if k in results}
        write_json(path, results)
        write_text(args.out / "report.md", report(results))


if __name__ == "__main__":
    main()
