"""``stelab export RUN_DIR --out model.onnx``: a trained run as ONNX (``--format qdq|qonnx|float``), its size beside
the float export's, and with ``--verify N`` a check on N test images against PyTorch (onnxruntime or the qonnx
executor, and the integer reference). Needs the ``stelab[export]`` extra (onnx, onnxruntime, qonnx)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import SUMMARY

WEIGHT_FILES = ("model.pt", "checkpoint.pt")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=SUMMARY["export"],
                       description=__doc__)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder (config.json + model.pt or checkpoint.pt)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--format", default="qdq", help="qdq (standard ONNX, onnxruntime; default), qonnx (Quant op with "
                   "rounding_mode CEIL: exact), float (standard float ops: exact, 32-bit weights)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 25: int2/uint2; 21: int4; 13: int8)")
    p.add_argument("--int-bits", type=int, default=None, metavar="B",
                   help="store weight codes in at least B-bit integers (2, 4, 8, 16; default: the narrowest)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="also compare with PyTorch on the first N test images (needs the data set)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/ and cifar-10-batches-py/ (for --verify)")
    p.set_defaults(func=run)


def weights_file(run_dir: Path) -> Path:
    """The run's weights: ``model.pt`` (results/ folders) or ``checkpoint.pt``; a clear error if it has neither."""
    for name in WEIGHT_FILES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} has no weights ({' or '.join(WEIGHT_FILES)}): train it first (stelab train "
                            f"... --out {run_dir}; its config.json holds the settings used), or copy the run's "
                            "checkpoint.pt into it")


def load_run(run_dir: Path):
    """``(model in eval mode, TrainConfig)`` of a run folder (its config.json and weights)."""
    from ..train.checkpoint import load_weights
    from ..train.runs import build_model, read_config

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run folder (a folder with config.json and model.pt)")
    config = read_config(run_dir)
    weights = weights_file(run_dir)
    model = build_model(config)
    load_weights(model, weights)
    return model.eval(), config


def example_input(dataset: str):
    import torch

    from ..data import SHAPES

    return torch.zeros(2, *SHAPES[dataset])


def _require_extra() -> None:
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ValueError(f"stelab export needs {', '.join(missing)}: pip install 'stelab[export]'")


def run(args: argparse.Namespace) -> int:
    _require_extra()
    from .. import export

    model, config = load_run(args.run_dir)
    x = example_input(config.dataset)
    result = export.to_onnx(model, x, args.out, args.format, args.opset, args.int_bits)
    reference = export.build(model, x, "float", args.opset).bytes
    ratio = reference / result.bytes
    size = f"{ratio:.2f}x smaller than" if ratio >= 1.05 else f"{result.bytes / reference:.2f}x the size of"
    print(f"wrote {result.path}: {args.format}, opset {result.opset}, {result.bytes:,} bytes ({size} the float "
          f"export's {reference:,})")
    if result.types:
        kinds = sorted(set(result.types.values()))
        print("integer codes: " + ", ".join(f"{k} ({sum(v == k for v in result.types.values())} tensors)"
                                            for k in kinds))
    if args.format == "qdq":
        from ..export.onnx_export import TIE_NOTE

        print(TIE_NOTE)
    if args.verify:
        _verify(model, config, args)
    return 0


def _verify(model, config, args: argparse.Namespace) -> None:
    from .. import data
    from ..export.verify import verify

    images, _ = data.load(config.dataset, args.data_dir, "test")
    x = data.normalise(images[: args.verify], *data.STATS[config.dataset])
    # the exported format and the integer reference: both are what a deployment would run
    report = verify(model, x, formats=(args.format, "integer"), opset=args.opset)
    for name, r in report.items():
        print(f"{name}: predictions equal {r['predictions_equal']}/{r['samples']}, codes differing "
              f"{r['codes_differing']}/{r['codes_compared']} ({r['codes_differing_on_documented_ties']} on documented "
              f"ties), logits within the computed bound: {r['logits_within_bound']}")
