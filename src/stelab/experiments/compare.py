r"""Is one trained run better than another? Paired comparison on the same test images (``stelab compare``).

Two runs evaluated on the same images are paired: an image both get right or both get wrong says nothing about
which is better. Only the discordant images count: :math:`b`, those the baseline gets right and the other wrong,
and :math:`c`, the reverse. Under "equally accurate" each discordant image is a fair coin, so McNemar's exact test
gives the two-sided p value

.. math::  p = \min\Bigl(1,\; 2 \sum_{k=0}^{\min(b, c)} \binom{b + c}{k} 2^{-(b + c)}\Bigr),

with :math:`z = (c - b)/\sqrt{b + c}` its normal approximation. The accuracy difference
:math:`\hat d = (c - b)/n` over :math:`n` images has the paired standard error
:math:`\sqrt{b + c - (c - b)^2/n}\,/\,n`, much smaller than that of two independent accuracies when the runs agree
on most images (the unpaired one, :math:`\sqrt{\sum_i a_i(1 - a_i)/n}`, is given beside it). These are the standard
formulas; which images a split puts apart is the user's (``split``).

Each run is evaluated as it evaluated itself: its last checkpoint (or ``model.pt``), on the CPU, in its precision,
memory format and evaluation batch (:func:`stelab.train.evaluation.right_on_test`), so the accuracies are its own.
Each evaluation is recorded in the run folder (``test_right.json``, 1 bit per image), so a folder kept without its
weights, such as the summaries committed under ``results/``, still pairs with others. Runs on different test images
are refused, since nothing pairs them.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..io import JsonConfig, epoch_axis, markdown_table, save_figure, write_json, write_text
from .shape import finding

EXACT_CIFAR10 = 1000  # the default split for CIFAR-10 (see split_for)


@dataclass(frozen=True)
class CompareConfig(JsonConfig):
    """What ``stelab compare`` compares: run folders, the first the baseline; ``split`` where the test images are
    also cut in two (None: :func:`split_for`'s default; 0: no cut); ``labels`` names the runs in the same order in
    the report and the legends (default: their folder names, with parents where two would be equal)."""

    runs: tuple[str, ...] = field(default=())
    split: int | None = None
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(str(r) for r in self.runs))
        if len(self.runs) < 2:
            raise ValueError(f"compare needs a baseline run and at least one other, got {len(self.runs)}: "
                             "stelab compare BASELINE RUN [RUN ...]")
        if self.split is not None and not (isinstance(self.split, int) and self.split >= 0):
            raise ValueError(f"split must be an int >= 0 (0: no split), got {self.split!r} (--split)")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.labels and len(self.labels) != len(self.runs):
            raise ValueError(f"--labels gives {len(self.labels)} name(s) for {len(self.runs)} runs; give one per run, "
                             "the baseline's first, or none")
        if len(set(self.labels)) != len(self.labels) or not all(x.strip() for x in self.labels):
            raise ValueError(f"--labels must be distinct and not empty, got {list(self.labels)}")

    def names(self) -> list[str]:
        """The runs' names in the report and the legends: ``labels``, else :func:`run_labels`."""
        return list(self.labels) if self.labels else run_labels(self.runs)


def mcnemar(base: Tensor, other: Tensor) -> dict[str, Any]:
    """The paired comparison of two boolean "right on image i" vectors (module docstring): ``n``, both
    accuracies, ``b`` (base right, other wrong), ``c`` (the reverse), ``diff`` = ``(c - b)/n``, its paired and
    unpaired standard errors, ``z`` and the exact two-sided ``p``."""
    from scipy.stats import binomtest

    if base.shape != other.shape or base.dim() != 1 or base.numel() == 0:
        raise ValueError(f"mcnemar needs two equal-length 1-d vectors, got shapes {tuple(base.shape)} and "
                         f"{tuple(other.shape)}")
    base, other = base.bool(), other.bool()
    n = base.numel()
    b, c = int((base & ~other).sum()), int((~base & other).sum())
    acc_base, acc_other = float(base.float().mean()), float(other.float().mean())
    unpaired = math.sqrt((acc_base * (1 - acc_base) + acc_other * (1 - acc_other)) / n)
    return {"n": n, "acc_base": acc_base, "acc_other": acc_other, "b": b, "c": c, "diff": (c - b) / n,
            "se_paired": math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n, "se_unpaired": unpaired,
            "z": (c - b) / math.sqrt(b + c) if b + c else 0.0,
            "p": binomtest(min(b, c), b + c, 0.5).pvalue if b + c else 1.0}


@dataclass
class Evaluated:
    """One run on its test set: which images it gets right, with what it is."""
    run: str
    describe: str
    right: Tensor
    images: Tensor
    labels: Tensor
    dataset: str


def evaluate(run_dir: str | Path, batch: int | None = None) -> Evaluated:
    """``run_dir``'s model (last checkpoint or ``model.pt``) on its own test set, as the run evaluated itself; a
    folder without weights answers from its ``test_right.json`` (:func:`stelab.train.evaluation.right_or_recorded`)."""
    from ..train import read_config
    from ..train.evaluation import right_or_recorded
    from ..train.runs import describe_run

    right, images, labels = right_or_recorded(run_dir, batch=batch)
    return Evaluated(str(run_dir), describe_run(Path(run_dir)), right, images, labels,
                     read_config(run_dir).dataset)


def split_for(dataset: str, split: int | None) -> int:
    """Where the images are cut in two for a second look: ``split`` when given (0: no cut), else 1,000 for
    CIFAR-10 (the images REPRODUCTION.md compares with papers) and none for the others."""
    return split if split is not None else (EXACT_CIFAR10 if dataset == "cifar10" else 0)


def compare(config: CompareConfig, progress: bool = False) -> dict[str, Any]:
    """Every run of ``config.runs[1:]`` against the baseline ``runs[0]`` on the same test images: :func:`mcnemar`
    on all of them and, with a split, on the images before it and from it on. ``progress`` names each run on stderr
    as its evaluation starts (a VGG-11 takes about a minute on 2 CPU cores)."""
    runs = config.runs
    start = time.perf_counter()

    def evaluated(i: int) -> Evaluated:
        if progress:
            print(f"stelab compare: evaluating {runs[i]} ({i + 1}/{len(runs)})", file=sys.stderr, flush=True)
        return evaluate(runs[i])

    base = evaluated(0)
    cut = split_for(base.dataset, config.split)
    if config.split and config.split >= len(base.labels):  # asked for, but it would leave one side empty
        raise ValueError(f"split {config.split} (--split) leaves no images after it: the test set has "
                         f"{len(base.labels)}; give a smaller N, or 0 for no split")
    parts = {"all": slice(None)}
    if 0 < cut < len(base.labels):
        parts.update({f"first {cut:,}": slice(0, cut), f"from {cut:,} on": slice(cut, None)})
    names = config.names()
    results: dict[str, Any] = {"baseline": base.run, "baseline_label": names[0], "baseline_describe": base.describe,
                               "dataset": base.dataset, "split": cut, "comparisons": []}
    for i, run in enumerate(runs[1:], 1):
        other = evaluated(i)
        if not (torch.equal(other.labels, base.labels) and torch.equal(other.images, base.images)):
            raise ValueError(f"{run} was evaluated on other test images than {base.run} ({other.dataset}, "
                             f"{len(other.labels)} images, against {base.dataset}, {len(base.labels)}); only runs on "
                             "the same images pair (same data set, --limit-test, and seed for --synthetic runs)")
        results["comparisons"].append({"run": other.run, "label": names[i], "describe": other.describe,
                                       **{name: mcnemar(base.right[s], other.right[s]) for name, s in parts.items()}})
    results["findings"] = compare_findings(results)
    results["seconds"] = time.perf_counter() - start
    return results


def compare_findings(results: dict[str, Any], level: float = 0.05) -> list[dict[str, Any]]:
    """One measured finding per run and image set: the difference, its paired SE, and whether McNemar's test
    separates the two at ``level``."""
    found = []
    for comp in results["comparisons"]:
        name = comp["label"]
        for part, m in comp.items():
            if isinstance(m, dict):
                verdict = ("better" if m["diff"] > 0 else "worse") if m["p"] < level else "not distinguishable"
                found.append(finding(f"{name}:{part}", f"{name} vs the baseline, {part} ({m['n']:,} images): "
                                     f"{100 * m['diff']:+.2f} ± {100 * m['se_paired']:.2f} points, {verdict} "
                                     f"(p = {m['p']:.3g})", None, f"b = {m['b']}, c = {m['c']}"))
    return found


def render_markdown(results: dict[str, Any]) -> str:
    """report.md: one row per run and image set."""
    rows = []
    for comp in results["comparisons"]:
        for name, m in comp.items():
            if isinstance(m, dict):
                rows.append([comp["label"], name, m["n"], f"{100 * m['acc_base']:.2f}",
                             f"{100 * m['acc_other']:.2f}", f"{100 * m['diff']:+.2f} ± {100 * m['se_paired']:.2f}",
                             f"{100 * m['se_unpaired']:.2f}", f"{m['b']} / {m['c']}", f"{m['z']:+.2f}",
                             f"{m['p']:.3g}"])
    headers = ["run", "images", "n", "baseline acc (%)", "run acc (%)", "difference ± paired SE (points)",
               "unpaired SE", "b / c", "z", "p (exact)"]
    lines = [f"# Paired comparison against `{results['baseline']}`", "",
             f"Baseline ({results['baseline_label']}): {results['baseline_describe']}.", ""]
    lines += [f"- {c['label']} (`{c['run']}`): {c['describe']}." for c in results["comparisons"]]
    lines += ["", "b: images the baseline gets right and the run wrong; c: the reverse. The p value is McNemar's exact "
              "two-sided test on b and c (no difference in accuracy); z = (c - b)/sqrt(b + c).", "",
              markdown_table(headers, rows)]
    if results["split"]:
        lines += ["", f"The test images are also split at {results['split']:,} (`--split`; for CIFAR-10 the first "
                  "1,000 by default: REPRODUCTION.md compares those with papers)."]
    if results.get("curves"):
        lines += ["", "How each run got there (training loss and test accuracy per epoch, from its `metrics.jsonl`):",
                  "", f"![training curves of the compared runs]({results['curves']})"]
    return "\n".join(lines) + "\n"


def run_labels(runs: Sequence[str]) -> list[str]:
    """Short names for plot legends: each run folder's name, with its parent while two names would be equal."""
    paths = [Path(r) for r in runs]
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def plot_compared_curves(runs: Sequence[str], path: Path, labels: Sequence[str] | None = None) -> Path | None:
    """Training loss (log) and test accuracy per epoch of every run with epoch records, the baseline first (a thick
    line): how each got where it is compared, e.g. a short and a long schedule from the same start. None when no
    run kept its ``metrics.jsonl``. ``labels``: the legend's names (default :func:`run_labels`)."""
    from ..train.runs import epoch_records

    curves = [(label, epoch_records(run)) for label, run in zip(labels or run_labels(runs), runs, strict=True)]
    if not any(records for _, records in curves):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    epochs = []
    for i, (label, records) in enumerate(curves):
        if not records:
            continue
        x = [r["epoch"] for r in records]
        epochs += x
        style = {"lw": 2.4 if i == 0 else 1.4, "marker": "o", "ms": 3,
                 "label": label + (" (baseline)" if i == 0 else "")}
        ax_loss.plot(x, [r["train_loss"] for r in records], **style)
        ax_acc.plot(x, [100 * r["test_acc"] for r in records], **style)
    ax_loss.set(xlabel="epoch", yscale="log", ylabel="training loss (log)", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy (the run's own test split)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        epoch_axis(ax, epochs)
    return save_figure(fig, path)


def run_compare(config: CompareConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """:func:`compare`, written to ``out`` (``config.json``, ``results.json``, ``report.md`` and, when the runs kept
    their epoch records, ``curves.png``) once computed, so a refused comparison leaves no folder; ``progress`` as in
    :func:`compare`."""
    results = compare(config, progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = plot_compared_curves(config.runs, out / "curves.png", config.names())
    results["curves"] = "curves.png" if drawn else None
    write_json(out / "config.json", config.to_dict())
    write_json(out / "results.json", results)
    write_text(out / "report.md", render_markdown(results))
    return results
