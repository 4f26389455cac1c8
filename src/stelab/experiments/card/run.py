"""``run_card``: every section for every STE (cached per STE, section, seed and learning rate), the verdict, the run
folder. An interrupted card continues when rerun; adding an STE to a finished card measures only that STE."""

from __future__ import annotations

import itertools
import math
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...executors import Executor, Task, local_executor, run_graph
from ...io import read_json, write_json
from ..shape import finding
from .config import CardConfig, differences, ranked_by
from .sections import RESNET_SECTIONS, SECTIONS, fidelity, first_1000, train_cell

SECTION_ORDER = ("what", "two_layer", "symmetry", "classify", "fidelity", "train")


def _slug(label: str) -> str:
    """The cache name of an STE: its label and a fingerprint of its ``mu'`` (float64 values on a fixed grid), so a
    redefined STE under the same name (a user's edited file) is measured again, never read from the cache."""
    import hashlib

    import torch

    from ... import ste as ste_registry

    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    try:
        values = ste_registry.get(label).derivative(x, 1.0).numpy().tobytes()
    except Exception as err:  # noqa: BLE001 - a failing mu' is fingerprinted by its error
        values = repr(err).encode()
    digest = hashlib.sha256(values).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") + "-" + digest


def _cached(path: Path, compute: Callable[[], dict]) -> dict:
    """The cached result at ``path``, or ``compute()`` written there. A failure is returned as ``{"error": ...}``
    and not cached, so a rerun (after fixing a user's STE) tries again; the other sections go on."""
    if path.is_file():
        return read_json(path)
    try:
        result = compute()
    except Exception as err:  # noqa: BLE001 - a user's STE may fail in any way; its row says how
        return {"error": f"{type(err).__name__}: {err}"}
    if isinstance(result, dict) and not _finite(result):
        return {"error": "the section's numbers are not finite (NaN or inf): mu' returned NaN or inf?",
                "values": result}
    write_json(path, result)
    return result


def _check_cache(config: CardConfig, out: Path) -> None:
    """A folder's cache answers only for its own tier, bits, data and checkpoints (:func:`.config.differences`):
    another configuration is refused before anything is computed; the first run records its own."""
    path = out / "cache" / "config.json"
    if path.is_file():
        diff = differences(read_json(path), config)
        if diff:
            raise ValueError(f"{out} holds a card of another configuration ({'; '.join(diff)}); rerun with the "
                             "settings it was made with (more STEs, seeds or rates are fine), or choose another --out")
    write_json(path, config.to_dict())


def _finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite(v) for v in obj)
    return not (isinstance(obj, float) and not math.isfinite(obj))


def run_card(config: CardConfig, out: str | Path, progress: bool = True,
             executor: Executor | None = None) -> dict[str, Any]:
    """Measure every STE of ``config`` (sections 1-6, :mod:`.sections`), rank them (:func:`verdict`) and write the
    run folder ``out`` (``report.md``, ``results.json``, ``card.png``, ``cache/``). The cheap sections run here; the
    training cells of section 6 run on ``executor`` (default: the local one with ``config.jobs`` processes; Ray or
    SLURM from ``stelab.executors.make_executor``), each writing its cache file, so any engine continues any card."""
    from .report import write_report

    out, start = Path(out), time.perf_counter()
    _check_cache(config, out)
    labels = config.all_stes()
    sections = {**SECTIONS, **(RESNET_SECTIONS if config.sizes["resnet_epochs"] else {})}
    models = ("lenet5", "resnet20") if config.sizes["resnet_epochs"] else ("lenet5",)
    stes: dict[str, dict[str, Any]] = {label: {} for label in labels}
    bar = tqdm([(label, name) for label in labels for name in sections], desc="stelab card", disable=not progress,
               file=sys.stderr)
    for label, name in bar:
        bar.set_postfix_str(f"{label}: {name}")
        stes[label][name] = _cached(out / "cache" / name / f"{_slug(label)}.json", partial(sections[name], label,
                                                                                            config))
    cells = train_cells(config, out, labels, models, progress, executor)
    for label in labels:
        for model in models:
            stes[label][_cell_folder(model)] = training_summary(cells[label, model], config)
    end = _end_point(config, out)  # None without clipped relu among the STEs: the report says so
    for label in labels if end is not None else ():  # section 5 again, at the network clipped relu trained
        stes[label]["fidelity_end"] = _cached(out / "cache" / "fidelity_end" / f"{_slug(label)}.json",
                                              partial(fidelity, label, config, 0, "lenet5", end))
    if config.sizes.get("table1"):
        table1_cells(config, out, labels, stes, progress, executor)
    results = {"config": config.to_dict(), "stes": stes, **verdict(stes, config),
               "seconds": time.perf_counter() - start}
    results["findings"] = card_findings(results)
    write_report(results, out)
    return results


def _cell_folder(model: str) -> str:
    return "train" if model == "lenet5" else f"train_{model}"  # LeNet-5's: the quick tier's names


def train_cells(config: CardConfig, out: Path, labels: list[str], models: tuple[str, ...], progress: bool,
                executor: Executor | None) -> dict[tuple[str, str], list[dict]]:
    """Section 6: every (model, STE, rate, seed) fine-tuning run not cached yet, on ``executor``; per (STE, model)
    its cells in grid order, each ``{"lr", "seed", ...}`` as :func:`.sections.train_cell` returns it (or an error)."""
    grid = [(label, model, lr, seed) for model in models for label in labels for lr in config.lrs
            for seed in range(config.seeds)]
    names = {c: (_cell_folder(c[1]), f"{_slug(c[0])}-lr{c[2]:g}-seed{c[3]}") for c in grid}
    paths = {c: _cell_paths(out, *names[c]) for c in grid}  # (run folder, cache file)
    todo = [c for c in grid if not paths[c][1].is_file()]
    tasks = [Task(str(paths[c][0]), _train_cached, (str(out), *names[c], *c, config),
                  lock=str(paths[c][0] / ".lock")) for c in todo]
    owned = executor is None
    executor = local_executor(config.jobs) if owned else executor
    bar = tqdm(total=len(tasks), desc="stelab card: training", disable=not progress or not tasks, file=sys.stderr)
    try:
        done = run_graph(executor, tasks, done=lambda task: (bar.set_postfix_str(Path(task.key).name), bar.update()))
    finally:
        bar.close()
        if owned:
            executor.close()
    from ...train.runs import read_summary

    cells: dict[tuple[str, str], list[dict]] = {(label, model): [] for label in labels for model in models}
    for c in grid:
        run_dir, cache = paths[c]
        result = done.get(str(run_dir)) if c in todo else read_json(cache)
        if result and c[1] != "lenet5" and "test_acc_first1000" not in result:  # a cell cached before it was kept
            extra = first_1000(run_dir, read_summary(run_dir) or {})
            result = {**result, **extra}
            if extra and c not in todo:
                write_json(cache, result)  # evaluated once, not on every rerun
        cells[c[0], c[1]].append({"lr": c[2], "seed": c[3], **(result or {"error": "the run returned nothing"})})
    return cells


def _train_cached(out: str, section: str, name: str, label: str, model: str, lr: float, seed: int,
                  config: CardConfig) -> dict:
    """One cell, on an executor's worker: :func:`.sections.train_cell` in ``<out>/<section>/<name>``, its result
    cached at ``<out>/cache/<section>/<name>.json`` (an error is returned, not cached)."""
    run_dir, cache = _cell_paths(Path(out), section, name)
    return _cached(cache, partial(train_cell, label, config, lr, seed, run_dir, model))


def _cell_paths(out: Path, section: str, name: str) -> tuple[Path, Path]:
    """A training cell's run folder ``<out>/<section>/<name>`` and its cached result
    ``<out>/cache/<section>/<name>.json``."""
    return out / section / name, out / "cache" / section / f"{name}.json"


def table1_cells(config: CardConfig, out: Path, labels: list[str], stes: dict[str, dict], progress: bool,
                 executor: Executor | None = None) -> None:
    """The full tier: Table 1 cells of every STE (LeNet-5 / MNIST and ResNet-20 / CIFAR-10, 2 and 4 bits) on the
    paper's schedule scaled by ``table1_epochs_scale``, run by the table1 experiment itself (its folders under
    ``out/table1-<dataset>``: finished runs are kept, an interrupted sweep continues); per STE, section ``table1``
    holds each cell's mean test accuracy (%)."""
    from ...train import TrainConfig
    from ..reproduce import Table1Config
    from ..shape import EXPERIMENTS

    for label in labels:
        stes[label]["table1"] = {}
    for dataset, model in (("mnist", "lenet5"), ("cifar10", "resnet20")):
        base = TrainConfig(model=model, dataset=dataset, synthetic=config.synthetic, data_dir=config.data_dir)
        sweep = Table1Config(dataset=dataset, models=(model,), bits=(2, 4), stes=tuple(labels),
                             epochs_scale=config.table1_epochs_scale, train=base, jobs=config.jobs)
        results = EXPERIMENTS["table1"](sweep, out / f"table1-{dataset}", progress, executor=executor)
        for cell in results["cells"]:
            if cell["ste"] in stes and cell["bits"] is not None:
                stes[cell["ste"]]["table1"][f"{model} {cell['bits']}-bit"] = cell["test_acc_mean"]


def card_findings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The recommendation, the ranking, whether retuning the rate changes it, and for each cheap measure whether it
    predicts the training outcome (Spearman rho with its exact permutation p)."""
    out = [finding("recommendation", results["recommendation"]),
           finding("ranking", f"ranking ({results['rule']}): {', '.join(results['ranking'])}"),
           finding("retuning", "retuning the learning rate per STE changes the ranking"
                   if results["ranking_changes_with_retuning"] else "the ranking is the same at the common rate")]
    for name, s in results["predictors"].items():
        if s.get("rho") is not None:
            out.append(finding(f"predictor:{name}", f"{name} predicts the training outcome: Spearman rho "
                               f"{s['rho']:+.2f} (p = {s['p_value']:.3g}, {s['n']} STEs)"))
    return out


def _end_point(config: CardConfig, out: Path) -> Path | None:
    """LeNet-5 fine-tuned with clipped relu at the common rate, seed 0: the end point the fidelity is measured at."""
    common = config.lrs[len(config.lrs) // 2]
    path = out / "train" / f"{_slug('clipped_relu')}-lr{common:g}-seed0" / "checkpoint.pt"
    return path if path.is_file() else None


def training_summary(cells: list[dict], config: CardConfig) -> dict[str, Any]:
    """Per learning rate the mean test accuracy over seeds (a diverged or failed run counts as 0), the best rate and
    the accuracy at the common rate (the middle of the grid); for CIFAR-10 also the best rate's accuracy on the first
    1,000 test images (the rate is chosen on all 10,000)."""
    by_lr: dict[float, list[float]] = {}
    failed = []
    for c in cells:
        acc = c.get("test_acc")
        ok = "error" not in c and c.get("status") == "finished" and acc is not None and math.isfinite(acc)
        by_lr.setdefault(c["lr"], []).append(float(acc) if ok else 0.0)
        if not ok:
            failed.append({"lr": c["lr"], "seed": c["seed"], "why": c.get("error") or c.get("status")})
    means = {lr: float(np.mean(v)) for lr, v in by_lr.items()}
    best = max(means, key=lambda lr: (means[lr], -lr)) if means else None
    common = config.lrs[len(config.lrs) // 2]
    first = [c["test_acc_first1000"] for c in cells if c["lr"] == best and c.get("test_acc_first1000") is not None]
    return {"accuracy_by_lr": {f"{lr:g}": a for lr, a in means.items()}, "best_lr": best,
            "best_accuracy": means.get(best) if best is not None else None,
            **({"best_accuracy_first1000": float(np.mean(first))} if first else {}),
            "common_lr": common, "common_accuracy": means.get(common), "failed": failed, "cells": cells}


def _ranks(values: list[float]) -> np.ndarray:
    """Average ranks (1 = smallest), ties shared."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in set(values):
        idx = [i for i, x in enumerate(values) if x == v]
        ranks[idx] = np.mean(ranks[idx])
    return ranks


def spearman(x: list[float], y: list[float]) -> dict[str, Any]:
    """Spearman's rho of ``x`` and ``y`` and its two-sided permutation p-value (exact for up to 8 points, else
    20,000 random permutations): the chance that a random pairing correlates at least as strongly."""
    n = len(x)
    if n < 3:
        return {"rho": None, "p_value": None, "n": n}
    rx, ry = _ranks(x), _ranks(y)

    def rho(a: np.ndarray) -> float:
        sa, sb = a - a.mean(), ry - ry.mean()
        denom = math.sqrt(float(sa @ sa) * float(sb @ sb))
        return float(sa @ sb) / denom if denom else 0.0

    observed = rho(rx)
    if n <= 8:
        perms = [np.array(p) for p in itertools.permutations(rx)]
    else:
        rng = np.random.default_rng(0)
        perms = [rng.permutation(rx) for _ in range(20_000)]
    extreme = sum(abs(rho(p)) >= abs(observed) - 1e-12 for p in perms)
    return {"rho": observed, "p_value": extreme / len(perms), "n": n}


def verdict(stes: dict[str, dict], config: CardConfig) -> dict[str, Any]:
    """The ranking (rule: the test accuracy of the largest network trained, at each STE's own best learning rate,
    ties by the fidelity cosine), the ranking at the common rate, whether the cheap measures predict training, one
    recommendation."""
    section, network = ranked_by(stes)

    def acc(label: str, key: str) -> float:
        value = stes[label][section].get(key)
        return value if value is not None else -1.0

    def cos(label: str) -> float:
        value = stes[label].get("fidelity", {}).get("cosine")
        return value if isinstance(value, float) else -2.0

    labels = list(stes)
    ranking = sorted(labels, key=lambda s: (-acc(s, "best_accuracy"), -cos(s)))
    common = sorted(labels, key=lambda s: (-acc(s, "common_accuracy"), -cos(s)))
    outcome = [acc(s, "best_accuracy") for s in labels]  # of the ranked network
    predictors = {}
    cheap = [("two_layer_min_cosine", lambda s: stes[s].get("two_layer", {}).get("min_cosine")),
             ("fidelity_cosine", lambda s: stes[s].get("fidelity", {}).get("cosine")),
             ("fidelity_cosine_at_end_point", lambda s: stes[s].get("fidelity_end", {}).get("cosine"))]
    if section != "train":  # the standard and full tiers: their ResNet-20 fidelity, and the LeNet-5 training
        cheap += [("fidelity_cosine_resnet20", lambda s: stes[s].get("fidelity_resnet20", {}).get("cosine")),
                  ("lenet5_best_accuracy", lambda s: stes[s].get("train", {}).get("best_accuracy"))]
    for name, get in cheap:
        pairs = [(get(s), o) for s, o in zip(labels, outcome) if isinstance(get(s), float)]
        predictors[name] = spearman([p for p, _ in pairs], [o for _, o in pairs])
    return {"ranking": ranking, "ranking_common_lr": common, "ranking_changes_with_retuning": ranking != common,
            "rule": f"{network} test accuracy after fine-tuning at each STE's best learning rate of "
                    f"{list(config.lrs)} (mean over {config.seeds} seed(s)); ties by the fidelity cosine",
            "predictors": predictors, "recommendation": recommendation(stes, ranking, config)}


def recommendation(stes: dict[str, dict], ranking: list[str], config: CardConfig) -> str:
    section, network = ranked_by(stes)
    best = ranking[0]
    t = stes[best][section]
    graded = [s for s in ranking if s in {*(config.all_stes()[:len(config.stes)])}]
    text = (f"Use {best}: {100 * (t['best_accuracy'] or 0):.2f} % on {network} at {config.bits} bits "
            f"(best rate {t['best_lr']:g})")
    if len(ranking) > 1:
        runner = stes[ranking[1]][section]
        gap = 100 * ((t["best_accuracy"] or 0) - (runner["best_accuracy"] or 0))
        text += f", {gap:.2f} points above {ranking[1]}"
        # the binomial standard error of a difference of two accuracies on the same-size test set
        p, n = t["best_accuracy"] or 0.0, config.synthetic // 4 if config.synthetic else 10_000
        noise = 100 * 2 * math.sqrt(2 * p * (1 - p) / (n * config.seeds))
        if gap < noise:
            text += f" (within two standard errors of a difference on {n} test images, {noise:.2f} points: not " \
                    "resolved)"
    fid = stes[best].get("fidelity", {}).get("cosine")
    if isinstance(fid, float):
        text += f"; its coarse gradient's cosine with the smoothed reference is {fid:.3f}"
    if graded and graded[0] != best:
        text += f". The best graded STE, {graded[0]}, ranks {ranking.index(graded[0]) + 1} of {len(ranking)}"
    return text + f" ({config.tier} tier, {config.seeds} seed(s): a small sample; see the intervals)."


__all__ = ["run_card", "spearman", "training_summary", "verdict"]
