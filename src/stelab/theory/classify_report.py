"""Experiments behind ``stelab classify``: coarse gradient descent on synthetic non-linearly-separable data and on
MNIST, for every STE, written as a run folder (``classify.json``, ``classify.md``, PNG figures)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..config import JsonConfig  # noqa: E402
from ..io import markdown_table, save_figure, write_json, write_text  # noqa: E402
from .classify import PAPER_STES, CoarseGDConfig, check_monotone, ste_choices, train_coarse  # noqa: E402
from .classify_data import KINDS, make, min_cross_class_angle  # noqa: E402


@dataclass(frozen=True)
class SyntheticSettings(JsonConfig):
    """The synthetic grid. ``main``: class-assigned fixed readout, full batch, every bit-width; ``minibatch``: the
    same at ``minibatch_bits`` with batches of ``batch_size``; ``trained_readout``: ``V`` trained too, with
    ``hidden_trained`` neurons (few enough that random features alone do not fit the data)."""

    kinds: tuple[str, ...] = KINDS
    stes: tuple[str, ...] = ()  # () = every STE (registry + classify.EXTRA_STES)
    bits: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1)
    num_classes: int = 4
    dim: int = 20
    per_class: int = 50
    subspace_dim: int = 2
    half_angle: float = 30.0
    hidden: int = 32
    hidden_trained: int = 8
    lr: float = 0.1
    steps: int = 2000
    batch_size: int = 20
    minibatch_bits: tuple[int, ...] = (2,)
    trained_readout_bits: tuple[int, ...] = (4,)
    eval_every: int = 20

    def data(self, kind: str, seed: int):
        common = {"num_classes": self.num_classes, "dim": self.dim, "per_class": self.per_class, "seed": seed}
        extra = {"subspace_dim": self.subspace_dim} if kind == "subspaces" else {"half_angle": self.half_angle}
        return make(kind, **common, **extra)

    def runs(self) -> list[tuple[str, str, int, str, int, CoarseGDConfig]]:
        """(section, kind, bits, ste, seed, config) for every run of the grid."""
        stes = self.stes or tuple(ste_choices())
        base = {"lr": self.lr, "steps": self.steps, "eval_every": self.eval_every, "loss": "hinge"}
        sections = [("main", self.bits, {"hidden": self.hidden, "fixed_readout": True}),
                    ("minibatch", self.minibatch_bits,
                     {"hidden": self.hidden, "fixed_readout": True, "batch_size": self.batch_size}),
                    ("trained_readout", self.trained_readout_bits, {"hidden": self.hidden_trained})]
        out = []
        for section, bit_list, opts in sections:
            for kind in self.kinds:
                for bits in bit_list:
                    for ste in stes:
                        for seed in self.seeds:
                            cfg = CoarseGDConfig(bits=bits, ste=ste, seed=seed, **base, **opts)
                            out.append((section, kind, bits, ste, seed, cfg))
        return out


def run_synthetic(settings: SyntheticSettings, progress: bool = True) -> dict:
    runs = settings.runs()
    records, curves = [], {}
    datasets = {(k, s): settings.data(k, s) for k in settings.kinds for s in settings.seeds}
    for section, kind, bits, ste, seed, cfg in tqdm(runs, desc="classify synthetic", disable=not progress):
        data = datasets[(kind, seed)]
        res = train_coarse(cfg, data.x, data.y, data.num_classes)
        records.append({"section": section, "kind": kind, "bits": bits, "ste": ste, "seed": seed,
                        "accuracy": res["train"]["accuracy"], "loss": res["train"]["loss"],
                        "first_step_perfect": res["first_step_perfect"],
                        "first_step_zero_loss": res["first_step_zero_loss"], "steps_run": res["steps_run"],
                        "W_norm": res["weight_norms"]["W"], "seconds": res["seconds"]})
        if seed == settings.seeds[0]:
            curves[f"{section}/{kind}/{bits}/{ste}"] = [(h["step"], h["loss"], h["accuracy"]) for h in res["history"]]
    data_info = {f"{k}/seed{s}": {**d.meta, "N": len(d), "min_cross_class_angle_deg": min_cross_class_angle(d.x, d.y)}
                 for (k, s), d in datasets.items()}
    return {"settings": settings.to_dict(), "data": data_info, "runs": records, "summary": summarise(records),
            "curves": curves}


def summarise(records: list[dict]) -> list[dict]:
    """One row per (section, kind, bits, ste) over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["section"], r["kind"], r["bits"], r["ste"]), []).append(r)
    rows = []
    for (section, kind, bits, ste), rs in groups.items():
        zero_steps = [r["first_step_zero_loss"] for r in rs if r["first_step_zero_loss"] is not None]
        rows.append({"section": section, "kind": kind, "bits": bits, "ste": ste, "seeds": len(rs),
                     "perfect": sum(r["accuracy"] == 1.0 for r in rs), "zero_loss": len(zero_steps),
                     "median_step_zero_loss": statistics.median(zero_steps) if zero_steps else None,
                     "mean_accuracy": statistics.fmean(r["accuracy"] for r in rs),
                     "mean_loss": statistics.fmean(r["loss"] for r in rs)})
    return rows


@dataclass(frozen=True)
class MnistSettings(JsonConfig):
    """``V q(W x)`` on MNIST (flattened, normalised); mini-batch coarse SGD with momentum and cross-entropy on the
    first ``train_subset`` training images; test accuracy on the full test split."""

    stes: tuple[str, ...] = ()
    bits: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0, 1)
    hidden: int = 256
    train_subset: int = 10000
    epochs: int = 2
    batch_size: int = 100
    lr: float = 0.02
    momentum: float = 0.9
    data_dir: str | None = None


def load_mnist_flat(data_dir: str | None, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import STATS, load_mnist

    images, labels = load_mnist(data_dir, split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    (mean,), (std,) = STATS["mnist"]
    x = (images.reshape(len(images), -1).to(torch.float32) / 255.0 - mean) / std
    return x, labels


def run_mnist(settings: MnistSettings, progress: bool = True) -> dict:
    x, y = load_mnist_flat(settings.data_dir, "train", settings.train_subset)
    xt, yt = load_mnist_flat(settings.data_dir, "test")
    steps = settings.epochs * (len(y) // settings.batch_size)
    records = []
    grid = [(b, s, seed) for b in settings.bits for s in (settings.stes or tuple(ste_choices())) for seed in
            settings.seeds]
    for bits, ste, seed in tqdm(grid, desc="classify mnist", disable=not progress):
        cfg = CoarseGDConfig(bits=bits, ste=ste, hidden=settings.hidden, loss="cross_entropy", lr=settings.lr,
                             momentum=settings.momentum, steps=steps, batch_size=settings.batch_size, eval_every=0,
                             seed=seed)
        res = train_coarse(cfg, x, y, 10, test=(xt, yt))
        records.append({"bits": bits, "ste": ste, "seed": seed, "train_accuracy": res["train"]["accuracy"],
                        "train_loss": res["train"]["loss"], "test_accuracy": res["test"]["accuracy"],
                        "seconds": res["seconds"]})
    return {"settings": settings.to_dict(), "steps": steps, "train_size": len(y), "test_size": len(yt),
            "runs": records}


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def render_markdown(result: dict) -> str:
    lines = ["# stelab classify: monotone STEs and multi-class classification (Long, Yin & Xin 2021)", ""]
    lines += ["## Monotone STEs", "", "`is_monotone`: mu non-decreasing on R and mu' > 0 on (0, top); checked on "
              "grids at top in {0.25, 1, 4}.", ""]
    rows = [[m["ste"], m["flag"], m["non_decreasing"], m["increasing_on_support"], _fmt(m["min_derivative"]),
             _fmt(m["argmin_over_top"]), _fmt(m["min_on_support"]), m["monotone"], m["one_sided"]]
            for m in result["monotone"]]
    lines.append(markdown_table(["STE", "core flag", "mu'>=0", "mu'>0 on (0,top)", "min mu'", "first argmin x/top",
                                 "min mu' on (0,top)", "is_monotone", "one-sided"], rows))
    syn = result.get("synthetic")
    if syn:
        s = syn["settings"]
        lines += ["## Synthetic data", "", f"K={s['num_classes']} classes, dim {s['dim']}, {s['per_class']} points "
                  f"per class; hinge loss, lr {s['lr']}, at most {s['steps']} steps, seeds {list(s['seeds'])}. "
                  "'perfect' = seeds with 100% training accuracy, 'zero loss' = seeds that reached the global "
                  "minimum 0 exactly. Sections: `main` = fixed class-assigned readout V (only W learns, through the "
                  "STE), full batch; `minibatch` = the same with mini-batches; `trained_readout` = V trained too. "
                  "At 1 bit z(x) + z(-x) is constant for this bias-free network, so 100% on sign-symmetric classes "
                  "needs neurons exactly orthogonal to data points, a measure-zero set of W (docs/classify.md).", ""]
        rows = [[name, d["kind"], d["N"], d["dim"], d.get("subspace_dim", "-"), d.get("half_angle", "-"),
                 d["margin"], _fmt(d["min_cross_class_angle_deg"])] for name, d in syn["data"].items()]
        lines.append(markdown_table(["data set", "kind", "N", "dim", "subspace dim", "half-angle (deg)", "margin",
                                     "min angle between classes (deg)"], rows))
        for section in ("main", "minibatch", "trained_readout"):
            rows = [[r["kind"], r["bits"], r["ste"], f"{r['perfect']}/{r['seeds']}", f"{r['zero_loss']}/{r['seeds']}",
                     _fmt(r["median_step_zero_loss"]), _fmt(r["mean_accuracy"]), _fmt(r["mean_loss"])]
                    for r in syn["summary"] if r["section"] == section]
            if rows:
                lines += [f"### {section}", "", markdown_table(
                    ["data", "bits", "STE", "perfect", "zero loss", "median step", "mean acc", "mean loss"], rows)]
    mn = result.get("mnist")
    if mn:
        s = mn["settings"]
        lines += ["## MNIST", "", f"hidden {s['hidden']}, {mn['train_size']} training images, {s['epochs']} epochs "
                  f"({mn['steps']} steps of batch {s['batch_size']}), cross-entropy, lr {s['lr']}, momentum "
                  f"{s['momentum']}; test accuracy on {mn['test_size']} images, mean (min-max) over seeds.", ""]
        table: dict[tuple, list[float]] = {}
        for r in mn["runs"]:
            table.setdefault((r["ste"], r["bits"]), []).append(r["test_accuracy"])
        bits = sorted({r["bits"] for r in mn["runs"]})
        stes = sorted({r["ste"] for r in mn["runs"]})
        rows = [[ste] + [f"{statistics.fmean(table[(ste, b)]):.4f} ({min(table[(ste, b)]):.4f}-"
                         f"{max(table[(ste, b)]):.4f})" for b in bits] for ste in stes]
        lines.append(markdown_table(["STE"] + [f"{b} bit" for b in bits], rows))
    return "\n".join(lines)


def plot_curves(result: dict, path: Path) -> None:
    syn = result["synthetic"]
    s = syn["settings"]
    panels = [(kind, bits) for kind in s["kinds"] for bits in s["bits"]]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 5.6), squeeze=False)
    for col, (kind, bits) in enumerate(panels):
        for key, curve in syn["curves"].items():
            section, k, b, ste = key.split("/")
            if section != "main" or k != kind or int(b) != bits or not curve:
                continue
            steps, loss, acc = zip(*curve)
            style = "-" if ste in PAPER_STES else "--"
            axes[0, col].plot(steps, [max(v, 1e-4) for v in loss], style, label=ste, lw=1)
            axes[1, col].plot(steps, acc, style, label=ste, lw=1)
        axes[0, col].set_yscale("log")
        axes[0, col].set_title(f"{kind}, {bits} bit")
        axes[1, col].set_xlabel("step")
    axes[0, 0].set_ylabel("hinge loss (0 plotted at 1e-4)")
    axes[1, 0].set_ylabel("training accuracy")
    axes[1, -1].legend(fontsize=6)
    save_figure(fig, path)


def plot_mnist(result: dict, path: Path) -> None:
    runs = result["mnist"]["runs"]
    stes = sorted({r["ste"] for r in runs})
    bits = sorted({r["bits"] for r in runs})
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(stes), 3.5))
    width, lowest = 0.8 / len(bits), 1.0
    for i, b in enumerate(bits):
        accs = [[r["test_accuracy"] for r in runs if r["ste"] == s and r["bits"] == b] for s in stes]
        means = [statistics.fmean(a) for a in accs]
        spread = [[m - min(a) for m, a in zip(means, accs)], [max(a) - m for m, a in zip(means, accs)]]
        ax.bar([j + i * width for j in range(len(stes))], means, width, yerr=spread, capsize=2, label=f"{b} bit")
        lowest = min(lowest, *(min(a) for a in accs))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(stes))], stes, rotation=30, ha="right")
    ax.set_ylim(max(0.0, math.floor((lowest - 0.02) * 50) / 50), 1.0)  # zoomed: the differences are a few percent
    ax.set_ylabel("MNIST test accuracy (bars: min-max over seeds)")
    ax.legend(fontsize=7, ncol=len(bits), loc="upper left")
    save_figure(fig, path)


def write_report(result: dict, out: Path) -> list[Path]:
    """``classify.json`` (curves included), ``classify.md`` and the figures; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "classify.json", result), write_text(out / "classify.md", render_markdown(result))]
    if result.get("synthetic"):
        plot_curves(result, out / "synthetic_curves.png")
        paths.append(out / "synthetic_curves.png")
    if result.get("mnist"):
        plot_mnist(result, out / "mnist_accuracy.png")
        paths.append(out / "mnist_accuracy.png")
    return paths


def monotone_table(stes: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for name in stes or tuple(ste_choices()):
        c = check_monotone(name)
        rows.append({**c.__dict__, "monotone": c.monotone})
    return rows
