"""``stelab classify`` (Long, Yin & Xin 2021): :class:`SyntheticSettings` / :class:`MnistSettings` ->
:func:`run_synthetic` / :func:`run_mnist` (coarse gradient descent of :mod:`stelab.theory.classify` on synthetic
non-linearly-separable data and on MNIST, for every STE) -> results -> a run folder (``report.md``,
``results.json``, PNG figures, :func:`write_report`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..io import (  # noqa: E402
    JsonConfig,  # noqa: E402
    markdown_table,
    save_figure,
    write_json,
    write_text,
)
from ..theory.classify import ONE_SIDED_STES, CoarseGDConfig, check_monotone, ste_choices, train_coarse  # noqa: E402
from ..theory.classify_data import KINDS, make, min_cross_class_angle  # noqa: E402
from .shape import finding  # noqa: E402


@dataclass(frozen=True)
class SyntheticSettings(JsonConfig):
    """The synthetic grid. ``main``: class-assigned fixed readout, full batch, every bit-width; ``minibatch``: the
    same at ``minibatch_bits`` with batches of ``batch_size``; ``trained_readout``: ``V`` trained too, with
    ``hidden_trained`` neurons (few enough that random features alone do not fit the data)."""

    kinds: tuple[str, ...] = KINDS
    stes: tuple[str, ...] = ()  # () = every registered STE
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
    lines += ["Setting after the abstract of Long, Yin & Xin (2021), the only part of the paper available; the "
              "definitions, experiments and numbers below are stelab's own (docs/classify.md).", ""]
    lines += ["## Monotone STEs", "", "`is_monotone` (stelab's definition): mu non-decreasing on R and mu' > 0 on "
              "(0, top); checked on grids at top in {0.25, 1, 4}. Monotone alone did not give convergence in our "
              "runs (identity, hardtanh and approx_sign are monotone); `one-sided` (mu'(t) >= mu'(-t), strictly on "
              "(0, top)) is the property that went with it.", ""]
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
        lines += ["Training accuracy of the `main` runs (first seed) against the step:", "",
                  "![synthetic curves](synthetic_curves.png)", ""]
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
        lines += [markdown_table(["STE"] + [f"{b} bit" for b in bits], rows), "![MNIST accuracy](mnist_accuracy.png)",
                  ""]
    return "\n".join(lines)


def plot_curves(result: dict, path: Path) -> None:
    """Training accuracy against the step of the ``main`` section: one panel per (data kind, bits), every STE in the
    same colour everywhere; solid: the one-sided monotone STEs, dashed: the others."""
    syn = result["synthetic"]
    s = syn["settings"]
    kinds, bits = list(s["kinds"]), list(s["bits"])
    stes = sorted({key.split("/")[3] for key in syn["curves"]})
    fig, axes = plt.subplots(len(kinds), len(bits), figsize=(1.5 + 4.0 * len(bits), 1.2 + 3.0 * len(kinds)),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for key, curve in syn["curves"].items():
        section, kind, b, ste = key.split("/")
        if section != "main" or not curve:
            continue
        steps, _, acc = zip(*curve)
        i = stes.index(ste)
        axes[kinds.index(kind), bits.index(int(b))].plot(
            steps, [100 * a for a in acc], "-" if ste in ONE_SIDED_STES else "--", color=plt.cm.tab10(i % 10),
            lw=1.6, label=ste, marker="o" if len(steps) == 1 else None)
    for r, kind in enumerate(kinds):
        for c, b in enumerate(bits):
            ax = axes[r, c]
            ax.set_title(f"{kind}, {b} bit", fontsize=11)
            ax.grid(alpha=0.3)
            ax.set_ylim(0, 102)
        axes[r, 0].set_ylabel("training accuracy (%)")
    for ax in axes[-1]:
        ax.set_xlabel("coarse GD step")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    # below the panels: at the right, a narrow (one-panel) figure's legend ran into the title
    shown = [n for n in stes if n in handles]
    fig.legend([handles[n] for n in shown], shown, loc="outside lower center", ncol=min(len(shown), 4),
               title="STE (solid: one-sided)", fontsize=10)
    fig.suptitle(f"Coarse gradient descent, fixed readout, full batch (seed {s['seeds'][0]}, "
                 f"{s['num_classes']} classes, dim {s['dim']})", fontsize=12)
    save_figure(fig, path)


def plot_mnist(result: dict, path: Path) -> None:
    """Mean test accuracy per STE and bit width, bars from 0, each labelled with its value."""
    runs = result["mnist"]["runs"]
    stes = sorted({r["ste"] for r in runs})
    bits = sorted({r["bits"] for r in runs})
    seeds = len({r["seed"] for r in runs})
    fig, ax = plt.subplots(figsize=(2.0 + 0.8 * len(stes) * max(1, len(bits)) / 2, 4.2), layout="constrained")
    width = 0.8 / len(bits)
    for i, b in enumerate(bits):
        accs = [[100 * r["test_accuracy"] for r in runs if r["ste"] == s and r["bits"] == b] for s in stes]
        means = [statistics.fmean(a) for a in accs]
        spread = [[m - min(a) for m, a in zip(means, accs)], [max(a) - m for m, a in zip(means, accs)]]
        bars = ax.bar([j + i * width for j in range(len(stes))], means, width, yerr=spread if seeds > 1 else None,
                      capsize=2, label=f"{b}")
        ax.bar_label(bars, [f"{m:.1f}" for m in means], label_type="center", rotation=90, fontsize=8, color="white")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(stes))], stes, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST, V q(Wx): mean test accuracy over {seeds} seed(s)" + (" (error bars: min-max)" if seeds > 1
                                                                             else ""), fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=9, loc="outside lower center", ncol=len(bits), title="bits")
    save_figure(fig, path)


def findings(result: dict) -> list[dict]:
    """One finding per STE and experiment: runs at 100% training accuracy (synthetic, main section), and the mean
    MNIST test accuracy per bit width (measurements: ``held`` is None)."""
    out = []
    syn, mn = result.get("synthetic"), result.get("mnist")
    if syn:
        by_ste: dict[str, list[int]] = {}
        for r in syn["summary"]:
            if r["section"] == "main":
                by_ste.setdefault(r["ste"], [0, 0])
                by_ste[r["ste"]][0] += r["perfect"]
                by_ste[r["ste"]][1] += r["seeds"]
        out += [finding(f"synthetic:{ste}", f"{ste}: {p}/{n} synthetic runs (main section) at 100% training "
                        "accuracy") for ste, (p, n) in sorted(by_ste.items())]
    if mn:
        accs: dict[str, dict[int, list[float]]] = {}
        for r in mn["runs"]:
            accs.setdefault(r["ste"], {}).setdefault(r["bits"], []).append(100 * r["test_accuracy"])
        for ste, cells in sorted(accs.items()):
            means = ", ".join(f"{b} bit {statistics.fmean(a):.2f}%" for b, a in sorted(cells.items()))
            out.append(finding(f"mnist:{ste}", f"{ste}: MNIST mean test accuracy {means}"))
    return out


def write_report(result: dict, out: Path) -> list[Path]:
    """``results.json`` (curves included), ``report.md`` and the figures; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out / "results.json", result), write_text(out / "report.md", render_markdown(result))]
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


@dataclass(frozen=True)
class ClassifyConfig(JsonConfig):
    """``stelab classify``: the monotone table of ``stes`` (empty: every registered STE), then the synthetic grid
    (``synthetic``; None: skipped) and the MNIST experiment (``mnist``; None: skipped)."""

    stes: tuple[str, ...] = ()
    synthetic: SyntheticSettings | None = SyntheticSettings()
    mnist: MnistSettings | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stes", tuple(self.stes))
        for name, kind in (("synthetic", SyntheticSettings), ("mnist", MnistSettings)):
            if isinstance(getattr(self, name), dict):  # nested, as in results.json
                object.__setattr__(self, name, kind.from_dict(getattr(self, name)))
        if self.synthetic is None and self.mnist is None:
            raise ValueError("nothing to do: neither the synthetic nor the MNIST experiment (--no-synthetic without "
                             "--mnist)")


def run_classify(config: ClassifyConfig, out: str | Path, progress: bool = True) -> dict:
    """The whole command: the monotone table, then each experiment the config has; writes the run folder ``out``
    and returns the results (with their ``findings``)."""
    result: dict = {"config": config.to_dict(), "monotone": monotone_table(config.stes)}
    if config.synthetic is not None:
        result["synthetic"] = run_synthetic(config.synthetic, progress)
    if config.mnist is not None:
        result["mnist"] = run_mnist(config.mnist, progress)
    result["findings"] = findings(result)
    write_report(result, Path(out))
    return result
