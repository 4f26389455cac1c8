"""Table 1 of Yin et al. (2019): a float model per (model, seed), then every (bits, STE) cell fine-tuned from it.

Layout of the output folder ``root``::

    root/<model>/seed<s>/float/               the float run (ReLU), trained once
    root/<model>/seed<s>/<bits>bit-<ste>/     one cell, initialised from the float run
    root/results.json, root/report.md, root/<model>-curves.png

A cell whose folder holds a finished (or diverged) summary is skipped and an unfinished one is resumed, so an
interrupted sweep continues where it stopped. Means and standard deviations are over the seeds whose run finished
with a finite loss (``n`` says how many); diverged runs are counted and marked, never averaged.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...activations.config import QuantConfig
from ...errors import check_choice
from ...executors import Executor, Task, local_executor, run_graph
from ...io import JsonConfig, epoch_axis, markdown_table, read_json, save_figure, write_json, write_text
from ...models import PAPER_EPOCHS
from ...train import TrainConfig, epoch_records, is_done, read_summary, train
from ...train.config import PRECISIONS
from ...train.loop import config_differences
from .ordering import ordering_findings, ordering_markdown, ste_ordering
from .paper import MODELS_BY_DATASET, STES, paper_cell


def scaled_epochs(model: str, scale: float) -> int:
    return max(1, round(PAPER_EPOCHS[model] * scale))


def float_dir(root: Path, model: str, seed: int) -> Path:
    return root / model / f"seed{seed}" / "float"


def cell_dir(root: Path, model: str, seed: int, bits: int, ste: str) -> Path:
    """An activation-only cell's folder, ``<bits>bit-<ste>`` (its ``TrainConfig.run_kind``)."""
    return root / model / f"seed{seed}" / f"{bits}bit-{ste}"


def run_or_resume(config: TrainConfig, progress: bool = True, check_config: bool = True) -> dict[str, Any]:
    """Train ``config`` into ``config.out`` unless it is done there already; resume an unfinished folder.

    A finished run whose configuration differs from ``config`` (beyond the runtime fields) is an error naming the
    differences, unless ``check_config`` is false: for runs used as given inputs (the instability experiment's
    minima from an existing Table 1 sweep, whatever schedule they were trained on)."""
    out = Path(config.out)
    if check_config and is_done(out) and (out / "config.json").is_file():
        diff = config_differences(out, config)
        if diff:  # the same rule as train --resume: a finished run answers only for its own configuration
            raise ValueError(f"{out} holds a finished run of another configuration ({'; '.join(diff)}); rerun with "
                             "the flags it was trained with, or choose another --out for the new settings")
    if is_done(out):
        print(f"skip {out} (done)", file=sys.stderr)
        return read_summary(out)  # type: ignore[return-value]
    print(f"train {out}", file=sys.stderr)
    return train(config, resume=(out / "config.json").is_file(), progress=progress)


@dataclass(frozen=True)
class Table1Config(JsonConfig):
    """One Table 1 sweep: which (model, bits, STE, seed) cells, on which schedule.

    ``models=()`` means the paper's models for the data set. ``epochs_scale`` scales the paper's epochs of the float
    runs (50 for LeNet-5, 200 for VGG-11 and ResNet-20); ``cell_epochs`` is the length of each quantized fine-tuning
    run (``None``: as long as the float run) and ``cell_precision`` its arithmetic (``None``: the float run's;
    ``fp32`` on a CPU without native bfloat16, where autocast is about 2x slower). ``train`` holds every other
    hyper-parameter (rate, schedule, precision, ...) shared by all runs; its model, seed, epochs, quantization, init
    and output folder are set per run (``None``: the defaults). ``jobs`` runs that many trainings at once, in
    separate processes sharing the cores (the local executor of :mod:`stelab.executors`; Ray and SLURM are the
    others, passed to :func:`run_table1`); results do not depend on it beyond the rounding of a different thread
    count.
    """

    dataset: str = "mnist"
    models: tuple[str, ...] = ()
    bits: tuple[int, ...] = (2, 4)
    stes: tuple[str, ...] = STES
    seeds: int = 1
    first_seed: int = 0
    epochs_scale: float = 1.0
    cell_epochs: int | None = None
    cell_precision: str | None = None
    jobs: int = 1
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, tuple(MODELS_BY_DATASET))
        for name in ("models", "bits", "stes"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.models:
            object.__setattr__(self, "models", tuple(MODELS_BY_DATASET[self.dataset]))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if self.train is None:
            object.__setattr__(self, "train", TrainConfig(model=self.models[0], dataset=self.dataset))
        if self.train.dataset != self.dataset:
            raise ValueError(f"train.dataset is {self.train.dataset!r} but the sweep is on {self.dataset!r}")
        if self.cell_epochs is not None and self.cell_epochs < 1:
            raise ValueError(f"cell_epochs must be >= 1, got {self.cell_epochs}")
        if self.cell_precision is not None:
            check_choice("cell_precision", self.cell_precision, PRECISIONS)
        for b in self.bits:
            for ste in self.stes:
                QuantConfig(bits=b, ste=ste)  # raises with the valid choices, before hours of runs
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.seeds < 1 or self.first_seed < 0 or not self.epochs_scale > 0:
            raise ValueError(f"need seeds >= 1, first_seed >= 0 and epochs_scale > 0, got {self.seeds}, "
                             f"{self.first_seed} and {self.epochs_scale}")

    def runs(self, root: Path, model: str, seed: int) -> tuple[TrainConfig, list[TrainConfig]]:
        """The float run of (``model``, ``seed``) and its quantized cells, each fine-tuned from it."""
        epochs = scaled_epochs(model, self.epochs_scale)
        base = self.train.replace(model=model, seed=seed, epochs=epochs)
        float_run = float_dir(root, model, seed)
        cells = []
        for b in self.bits:
            for ste in self.stes:
                # no warm-up: it is for the from-scratch rate; a cell starts trained, at the fine-tuning rate
                cell = base.replace(quant=QuantConfig(bits=b, ste=ste), init=str(float_run),
                                    epochs=self.cell_epochs or epochs, warmup_epochs=0.0,
                                    precision=self.cell_precision or base.precision)
                # named by what it quantizes: 2bit-relu (the paper's cells), w2a2-relu with --weight-bits
                cells.append(cell.replace(out=str(float_run.parent / cell.run_kind())))
        # the float run is the float network (weights too), the start of every cell, with or without --weight-bits
        return base.replace(quant=None, weights=None, optimizer="sgd", out=str(float_run)), cells

    @property
    def weights_tag(self) -> str:
        """``""`` for the paper's activation-only table, else the weight part of the cells' names (``w2``)."""
        return self.train.weight_tag()


def run_table1(config: Table1Config, root: str | Path, progress: bool = True,
               executor: Executor | None = None) -> dict[str, Any]:
    """Run (or finish) the sweep over seeds ``first_seed .. first_seed + seeds - 1`` on ``executor`` (default: the
    local one with ``config.jobs``) and write ``results.json``, ``report.md`` and the curve plots under ``root``. The
    table covers every seed folder present under ``root``, so seeds trained by separate invocations
    (``first_seed``) end up in one table."""
    root = Path(root)
    owned = executor is None
    executor = local_executor(config.jobs) if owned else executor
    try:
        run_graph(executor, table1_tasks(config, root, progress and executor.in_process))
    finally:
        if owned:
            executor.close()
    return write_table1(config, root)


def _float_finished(results: dict[str, Any]) -> bool:
    return all(r.get("status") == "finished" for r in results.values())


def table1_tasks(config: Table1Config, root: Path, progress: bool = False) -> list[Task]:
    """The sweep as a graph: each (model, seed) float run, then each of its cells after it (only if it finished:
    a cell fine-tunes the float minimum), so a cell starts as soon as *its* float run is done."""
    tasks = []
    for model in config.models:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            float_run, cells = config.runs(root, model, seed)
            tasks.append(Task(float_run.out, run_or_resume, (float_run, progress), lock=f"{float_run.out}/.lock"))
            tasks += [Task(c.out, run_or_resume, (c, progress), after=(float_run.out,), when=_float_finished,
                           why_not="its float run diverged", lock=f"{c.out}/.lock") for c in cells]
    return tasks


def write_table1(config: Table1Config, root: Path) -> dict[str, Any]:
    """``results.json``, ``report.md`` and the curve plots of every finished run under ``root``."""
    models, bits, stes = config.models, config.bits, config.stes
    runs = collect_runs(root, config)
    seeds_present = sorted({r["seed"] for r in runs})
    results = {"dataset": config.dataset, "models": models, "bits": bits, "stes": stes, "seeds": len(seeds_present),
               "seed_list": seeds_present, "epochs_scale": config.epochs_scale, "cell_epochs": config.cell_epochs,
               "weights": config.weights_tag, "config": config.to_dict(),
               "cells": aggregate(runs, models, bits, stes, paper=not config.weights_tag),
               "ordering": ste_ordering(runs, models, bits, stes, paper=not config.weights_tag), "runs": runs}
    results["findings"] = ordering_findings(results["ordering"])
    write_json(root / "results.json", results)
    write_text(root / "report.md", table1_markdown(results))
    for model in models:
        plot_model_curves(root, model, bits, stes, seed=config.first_seed, kinds=config)
    return results


def collect_runs(root: Path, config: Table1Config) -> list[dict]:
    """The summaries of every seed folder under ``root`` (this invocation's and earlier ones') trained for the
    same number of epochs; a cell whose float run diverged is listed as skipped. CIFAR-10 runs also get
    ``test_acc_first1000``: accuracy on the first 1,000 test images, the only ones identical to the official set."""
    runs: list[dict[str, Any]] = []
    for model in config.models:
        seed_dirs = sorted((root / model).glob("seed*"), key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        for seed_dir in seed_dirs:
            if not seed_dir.name[4:].isdigit():
                continue
            seed = int(seed_dir.name[4:])
            float_summary = read_summary(float_dir(root, model, seed))
            if float_summary is None or float_summary.get("epochs") != scaled_epochs(model, config.epochs_scale):
                continue
            runs.append(with_subset_accuracy(float_summary, float_dir(root, model, seed)))
            for cell in config.runs(root, model, seed)[1]:
                out, summary = Path(cell.out), read_summary(Path(cell.out))
                if summary is not None and summary.get("epochs") == cell.epochs:
                    runs.append(with_subset_accuracy(summary, out))
                elif float_summary["status"] != "finished":
                    runs.append({"status": "skipped (float diverged)", "model": model, "bits": cell.quant.bits,
                                 "ste": cell.quant.ste, "seed": seed, "dir": str(out)})
    return runs


EXACT_TEST_IMAGES = 1000  # CIFAR-10 test images past index 999 in ../shared/data went through JPEG (its README)


def with_subset_accuracy(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``summary`` with the run folder and, for a finished CIFAR-10 run, ``test_acc_first1000``: measured from the
    run's weights the first time and then kept in its ``results.json``, so that a folder kept without its weights
    (the summaries committed under ``results/``) still reports it."""
    out = {**summary, "dir": str(run_dir)}
    if summary.get("dataset") == "cifar10" and summary.get("status") == "finished":
        acc = summary.get("test_acc_first1000")
        if acc is None:
            acc = subset_accuracy(run_dir, EXACT_TEST_IMAGES)
            saved = Path(run_dir) / "results.json"
            if acc is not None and saved.is_file():
                try:
                    write_json(saved, {**read_json(saved), "test_acc_first1000": acc})
                except OSError as err:  # a read-only folder: measured again next time, nothing else differs
                    print(f"note: could not keep the first-1,000 accuracy in {saved} ({err}); it is measured again "
                          "next time", file=sys.stderr)
        out["test_acc_first1000"] = acc
    return out


def subset_accuracy(run_dir: Path, n: int) -> float | None:
    """Test accuracy of the run's last checkpoint on the first ``n`` test images (None without data/checkpoint)."""
    from ...train import read_config
    from ...train.evaluation import right_on_test

    try:
        if read_config(run_dir).synthetic:  # trained on generated images: the real test set says nothing about it
            return None
        right = right_on_test(run_dir, first=n)[0]
    except (FileNotFoundError, ValueError) as err:
        print(f"{run_dir}: no first-{n} accuracy ({err})", file=sys.stderr)
        return None
    return float(right.float().mean())


def _finite(run: dict[str, Any]) -> bool:
    loss = run.get("train_loss")
    return run.get("status") == "finished" and isinstance(loss, float) and math.isfinite(loss)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(runs: list[dict[str, Any]], models, bits, stes, paper: bool = True) -> list[dict[str, Any]]:
    """One entry per (model, bits, ste) plus the float rows: mean/std of the final training loss and test accuracy
    over the finite runs; ``paper=False`` (weights quantized too) leaves the paper's activation-only numbers out."""
    cells = []
    keys = [(m, None, "float") for m in models] + [(m, b, s) for m in models for b in bits for s in stes]
    for model, b, ste in keys:
        mine = [r for r in runs if r.get("model") == model and r.get("bits") == b and r.get("ste") == ste]
        finite = [r for r in mine if _finite(r)]
        loss_mean, loss_std = _mean_std([r["train_loss"] for r in finite])
        acc_mean, acc_std = _mean_std([100 * r["test_acc"] for r in finite])
        first = [100 * r["test_acc_first1000"] for r in finite if r.get("test_acc_first1000") is not None]
        first_mean, first_std = _mean_std(first)
        published = paper_cell(model, b, ste) if b is not None and paper else None
        cells.append({"model": model, "bits": b, "ste": ste, "n": len(finite), "runs": len(mine),
                      "diverged": sum(r.get("status") == "diverged" for r in mine),
                      "train_loss_mean": loss_mean, "train_loss_std": loss_std,
                      "test_acc_mean": acc_mean, "test_acc_std": acc_std,
                      "test_acc_first1000_mean": first_mean, "test_acc_first1000_std": first_std,
                      "paper_train_loss": published[0] if published else None,
                      "paper_test_acc": published[1] if published else None})
    return cells


def _pm(mean: float | None, std: float | None, fmt: str) -> str:
    if mean is None:
        return "-"
    return f"{mean:{fmt}} ± {std:{fmt}}" if std else f"{mean:{fmt}}"


def subset_note(results: dict[str, Any]) -> str:
    """A sentence for reports of runs on part of the data (``--limit-train``/``--limit-test``), empty otherwise:
    their numbers are not comparable with the paper's full-data ones."""
    train = (results.get("config") or {}).get("train") or {}
    parts = [f"the first {train[k]:,} {what} images ({flag})" for k, what, flag in
             (("limit_train", "training", "--limit-train"), ("limit_test", "test", "--limit-test")) if train.get(k)]
    if train.get("synthetic"):
        parts.append(f"{train['synthetic']:,} synthetic images (--synthetic)")
    if not parts:
        return ""
    return (f" **Subset of the data:** these runs used {' and '.join(parts)}; the paper's numbers are for the full "
            "data sets, so the comparison with them is only indicative.")


def weights_label(weights_tag: str, bits: int) -> str:
    """The bit widths of a weight-quantized cell as its row and plot show them: ``W2A2``, ``W2TA4`` (ternary), ..."""
    return f"{weights_tag.upper()}A{bits}"


def table1_markdown(results: dict[str, Any]) -> str:
    subset = any(c.get("test_acc_first1000_mean") is not None for c in results["cells"])
    headers = ["model", "bits", "STE", "paper loss / acc (%)", "ours loss", "ours acc (%)",
               *(["ours acc, first 1,000 (%)"] if subset else []), "n (finite/runs)", "note"]
    rows = []
    for c in results["cells"]:
        paper = "-" if c["paper_train_loss"] is None else f"{c['paper_train_loss']:.2e} / {c['paper_test_acc']:.2f}"
        note = f"{c['diverged']} diverged" if c["diverged"] else ""
        bits = c["bits"]
        if bits is None:
            bits = "float"
        elif results.get("weights"):  # a weight-quantized sweep
            bits = weights_label(results["weights"], bits)
        rows.append([c["model"], bits, c["ste"], paper,
                     _pm(c["train_loss_mean"], c["train_loss_std"], ".2e"),
                     _pm(c["test_acc_mean"], c["test_acc_std"], ".2f"),
                     *([_pm(c.get("test_acc_first1000_mean"), c.get("test_acc_first1000_std"), ".2f")]
                       if subset else []), f"{c['n']}/{c['runs']}", note])
    scale = results["epochs_scale"]
    ordering = ordering_markdown(results.get("ordering", []))  # only with two seeds or more
    epochs = ", ".join(f"{m}: {scaled_epochs(m, scale)}" for m in results["models"])
    if results.get("cell_epochs"):
        epochs += f"; quantized cells: {results['cell_epochs']}"
    if (results.get("config") or {}).get("cell_precision"):
        epochs += f", in {results['config']['cell_precision']}"
    return (f"# Table 1 (Yin et al. 2019) on {results['dataset']}\n\n"
            f"Epochs per run ({epochs}; scale {scale} of the paper's), {results['seeds']} seed(s). Loss: the final "
            "epoch's mean training loss; accuracy: test accuracy after the last epoch; mean ± std over the finite "
            "runs." + (" CIFAR-10: 'acc' is on all 10,000 test images, 'first 1,000' on the images identical to the "
                       "official set (the rest of our copy went through JPEG)." if subset else "")
            + subset_note(results) + "\n\n" + markdown_table(headers, rows)
            + (f"\n{ordering}" if ordering else ""))


def plot_model_curves(root: Path, model: str, bits: Sequence[int], stes: Sequence[str], seed: int = 0,
                      kinds: Table1Config | None = None) -> Path | None:
    """Per bit width: training loss and test accuracy per epoch of every STE (seed ``seed``) and the float run;
    ``kinds`` names the cells' folders (weight-quantized sweeps), default the activation-only names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(c.quant.bits, c.quant.ste): Path(c.out) for c in kinds.runs(root, model, seed)[1]} if kinds else {}
    series = {b: [(label, epoch_records(run)) for label, run in [("float", float_dir(root, model, seed))] + [
        (s, cells.get((b, s), cell_dir(root, model, seed, b, s))) for s in stes]] for b in bits}
    # a bit width none of whose cells has trained yet gets no panels (a partial sweep), unless no cell has
    shown = [b for b in bits if any(records for _, records in series[b][1:])] or list(bits[:1])
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 3.6 * len(shown)), squeeze=False, layout="constrained")
    drawn = False
    for row, b in zip(axes, shown):
        epochs_seen: list[int] = []
        for label, records in series[b]:
            if not records:
                continue
            drawn = True
            ep = [r["epoch"] for r in records]
            epochs_seen.extend(ep)
            # markers: a one-epoch run is one point, which a line alone does not draw
            style = dict(ls=":" if label == "float" else "-", marker="o", ms=3 if len(ep) > 1 else 6)
            row[0].plot(ep, [r["train_loss"] for r in records], label=label, **style)
            row[1].plot(ep, [100 * r["test_acc"] for r in records], label=label, **style)
        what = weights_label(kinds.weights_tag, b) if kinds and kinds.weights_tag else f"{b}-bit"
        row[0].set(title=f"{model} {what}, seed {seed}: training loss", xlabel="epoch", yscale="log")
        row[1].set(title=f"{model} {what}, seed {seed}: test accuracy (%)", xlabel="epoch")
        for ax in row:
            ax.grid(alpha=0.3)
            if epochs_seen:
                ax.legend()
                epoch_axis(ax, epochs_seen)
    if not drawn:
        plt.close(fig)
        return None
    return save_figure(fig, root / f"{model}-curves.png")
