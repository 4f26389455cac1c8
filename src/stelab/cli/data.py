"""``stelab data download mnist|cifar10`` and ``stelab data check``: get the data sets and see that they read."""

from __future__ import annotations

import argparse

from ..io import markdown_table
from . import SUMMARY


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..data import DATASETS

    p = sub.add_parser("data", help=SUMMARY["data"])
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    d = actions.add_parser("download", help="fetch the official archives (checksums verified)")
    d.add_argument("name", choices=DATASETS)
    d.add_argument("--data-dir", default=None, help="target folder (default: $STELAB_DATA, else ./data)")
    d.add_argument("--mirror", action="append", default=[], metavar="URL",
                   help="URL prefix to try before the official mirrors (repeatable)")
    d.add_argument("--force", action="store_true", help="download again even if the files are present")
    d.set_defaults(func=run_download)
    c = actions.add_parser("check", help="read every split and print counts, label histograms and channel stats")
    c.add_argument("names", nargs="*", default=list(DATASETS), metavar="NAME",
                   help=f"data sets to check (default: all of {', '.join(DATASETS)})")
    c.add_argument("--data-dir", default=None, help="data root (default: $STELAB_DATA, ../shared/data, ./data)")
    c.set_defaults(func=run_check)


def run_download(args: argparse.Namespace) -> int:
    from ..data.download import download

    path = download(args.name, args.data_dir, mirrors=tuple(args.mirror), force=args.force)
    print(f"{args.name}: ready in {path}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..data import channel_stats, find_data_dir, load

    root = find_data_dir(args.data_dir)
    print(f"data root: {root}\n")
    rows = []
    for name in args.names:
        for split in ("train", "test"):
            images, labels = load(name, root, split)
            means, stds = channel_stats(images)
            mean, std = " ".join(f"{v:.4f}" for v in means), " ".join(f"{v:.4f}" for v in stds)
            hist = " ".join(str(v) for v in labels.bincount(minlength=10).tolist())
            rows.append([name, split, len(labels), "x".join(map(str, images.shape[1:])), hist, mean, std])
    print(markdown_table(["data set", "split", "N", "shape", "label counts 0..9", "mean", "std"], rows))
    return 0
