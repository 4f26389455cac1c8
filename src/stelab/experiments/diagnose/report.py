"""The ``stelab diagnose`` report: Markdown tables, JSON and PNG plots of gradient fidelity, saturation, and their
course over training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ...diagnostics.fidelity import EXTRAPOLATED, MODEL, FidelityResult  # noqa: E402
from ...io import markdown_table, read_jsonl, save_figure, write_json, write_text  # noqa: E402

JSON_NAME, MARKDOWN_NAME = "results.json", "report.md"
LAYER_PLOT, TRAINING_PLOT, SATURATION_PLOT = "cosine_per_layer.png", "cosine_over_training.png", "saturation.png"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def fidelity_markdown(result: FidelityResult, reference: str | None = None) -> str:
    """Cosine (95% CI) per layer and STE against ``reference``, then inner products, then reference agreement."""
    reference = reference or result.references[-1]
    rows, inner_rows = [], []
    for layer in result.layers:
        cells, inner_cells = [layer], [layer]
        for ste in result.stes:
            r = result.get(ste, layer, reference)
            lo, hi = r["cosine_ci"]
            cells.append(f"{_fmt(r['cosine'])} [{_fmt(lo)}, {_fmt(hi)}]")
            if r["inner"] is None:
                inner_cells.append("n/a")
            else:
                inner_cells.append(f"{r['inner']:.3g}" + (f" ± {r['inner_se']:.2g}" if r["inner_se"] is not None
                                                           else ""))
        rows.append(cells)
        inner_rows.append(inner_cells)
    text = (f"Reference: `{reference}`; {result.n_batches} batches. Cosine of the mean coarse gradient with the mean "
            "reference gradient [95% jackknife interval]:\n\n" + markdown_table(["layer", *result.stes], rows))
    text += "\nInner product <E g, E r> (U-statistic ± jackknife s.e.; > 0: the STE points downhill on average):\n\n"
    text += markdown_table(["layer", *result.stes], inner_rows)
    norm_rows = []
    for layer in result.layers:
        cells = [layer]
        for ste in result.stes:
            r = result.get(ste, layer, reference)
            cells.append(_sq_norm(r["coarse_sq_norm_unbiased"], r["coarse_sq_norm_se"]))
        r = result.get(result.stes[0], layer, reference)
        norm_rows.append(cells + [_sq_norm(r["reference_sq_norm_unbiased"], r["reference_sq_norm_se"])])
    text += ("\nSquared norm of the mean gradient, ||E g||^2 (U-statistic ± s.e.; noise-free, so ~0 where the mean "
             "gradient vanishes):\n\n" + markdown_table(["layer", *result.stes, "reference"], norm_rows))
    text += _finest_beside_extrapolated(result, reference)
    agreement = [[a["layer"], a["reference"], _fmt(a["cosine"]), _fmt(a["cosine_se"])]
                 for a in result.reference_agreement if a["layer"] == MODEL]
    text += (f"\nHow the references agree with `{result.references[-1]}` (whole model; a reference that has "
             "converged in s agrees with its neighbours):\n\n"
             + markdown_table(["layer", "reference", "cosine", "s.e."], agreement))
    return text


def _finest_beside_extrapolated(result: FidelityResult, reference: str) -> str:
    """Whole-model cosine against the s -> 0 extrapolation and against the finest width, side by side: the linear
    extrapolation removes an O(s) bias but amplifies noise and is wrong when the bias is O(s^2), where the finest
    width alone is closer (docs/diagnostics.md), so a reader sees both."""
    smoothed_refs = [r for r in result.references if r != EXTRAPOLATED]
    if reference != EXTRAPOLATED or not smoothed_refs:
        return ""
    finest = smoothed_refs[-1]
    rows = []
    for ste in result.stes:
        ext, fine = result.get(ste, MODEL, EXTRAPOLATED), result.get(ste, MODEL, finest)
        rows.append([ste, *(f"{_fmt(r['cosine'])} [{_fmt(r['cosine_ci'][0])}, {_fmt(r['cosine_ci'][1])}]"
                            for r in (ext, fine))])
    return (f"\nWhole model, the extrapolated reference beside the finest width `{finest}` (they differ when the "
            "smoothing bias is not linear in s; see docs/diagnostics.md):\n\n"
            + markdown_table(["STE", "vs s→0 (extrapolated)", f"vs {finest}"], rows))


def _sq_norm(value: float | None, se: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" + (f" ± {se:.2g}" if se is not None else "")


def plot_layer_cosines(result: FidelityResult, path: str | Path, reference: str | None = None,
                       title: str = "") -> Path:
    """Left: cosine per layer and STE against ``reference`` (95% CI). Right: whole-model cosine against each
    reference width, which shows the bias (wide s) / noise (narrow s) trade-off of the reference."""
    reference = reference or result.references[-1]
    many = len(result.layers) > 8  # deep nets: layers down the page (horizontal bars) instead of a very wide figure
    if many:
        fig, (ax, ax_w) = plt.subplots(1, 2, figsize=(11, 1.5 + 0.12 * len(result.layers) * len(result.stes)),
                                       gridspec_kw={"width_ratios": [3, 1.3]}, layout="constrained")
    else:
        fig, (ax, ax_w) = plt.subplots(1, 2, figsize=(max(7.0, 0.9 * len(result.layers) * len(result.stes) / 2) + 4,
                                                      3.8), gridspec_kw={"width_ratios": [3, 1.3]})
    width = 0.8 / len(result.stes)
    for i, ste in enumerate(result.stes):
        rows = [result.get(ste, layer, reference) for layer in result.layers]
        values = [r["cosine"] if r["cosine"] is not None else float("nan") for r in rows]
        errors = [1.96 * (r["cosine_se"] or 0.0) for r in rows]
        xs = [j + (i - (len(result.stes) - 1) / 2) * width for j in range(len(result.layers))]
        if many:
            ax.barh(xs, values, width, xerr=errors, capsize=2, label=ste)
        else:
            ax.bar(xs, values, width, yerr=errors, capsize=2, label=ste)
        per_ref = [result.get(ste, MODEL, ref) for ref in result.references]
        ax_w.errorbar(range(len(result.references)), [r["cosine"] for r in per_ref],
                      yerr=[1.96 * (r["cosine_se"] or 0.0) for r in per_ref], marker="o", capsize=2, label=ste)
    if many:
        ax.set_yticks(range(len(result.layers)), result.layers, fontsize=8)
        ax.invert_yaxis()  # input layer on top
        ax.set(xlabel=f"cos(E g_STE, E grad) vs {reference}", xlim=(min(-1.05, ax.get_xlim()[0]), 1.05))
        ax.axvline(0, color="k", lw=0.5)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        cos_range = (-1.05, 1.05)
    else:
        ax.set_xticks(range(len(result.layers)), result.layers, rotation=30, ha="right")
        ax.set(ylabel=f"cos(E g_STE, E grad) vs {reference}", ylim=(min(0.0, ax.get_ylim()[0]), 1.05))
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=8)
        cos_range = ax.get_ylim()
    ax.set_title(title or "coarse vs true gradient, per layer")
    ax_w.set_xticks(range(len(result.references)),
                    [r.replace("smoothed(s=", "s=").replace("a)", "α").replace("extrapolated(s->0)", "s→0")
                     for r in result.references], rotation=30, ha="right")
    ax_w.set(title="whole model, by reference", ylim=cos_range)
    ax_w.axhline(0, color="k", lw=0.5)
    return save_figure(fig, path)


def hook_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The :class:`DiagnosticsHook` records of a run's ``metrics.jsonl``, in step order."""
    records = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl")
               if r.get("kind") == "hook" and isinstance(r.get("diagnostics"), dict)]
    return sorted(records, key=lambda r: r.get("step", 0))


def plot_cosine_over_training(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Whole-model one-batch cosine per STE against the training step (raw points and a running mean)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [r["step"] for r in records]
    stes = list(records[0]["diagnostics"]["cosine"]) if records else []
    for ste in stes:
        values = [r["diagnostics"]["cosine"][ste].get(MODEL) for r in records]
        values = [float("nan") if v is None else v for v in values]
        line, = ax.plot(steps, values, ".", alpha=0.35)
        ax.plot(steps, _running_mean(values, 5), "-", color=line.get_color(), label=ste)
    ax.set(xlabel="step", ylabel="cos(g_STE, smoothed grad), one batch",
           title=f"{title}: cosine over training" if title else "cosine over training")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _running_mean(values: list[float], k: int) -> list[float]:
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - k + 1): i + 1] if v == v]
        out.append(sum(window) / len(window) if window else float("nan"))
    return out


def plot_saturation_over_training(records: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Per quantized layer: fraction of pre-activations <= 0 (solid) and above the top level (dashed)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps = [r["step"] for r in records]
    layers = list(records[0]["diagnostics"]["saturation"]) if records else []
    for layer in layers:
        below = [r["diagnostics"]["saturation"].get(layer, {}).get("below", float("nan")) for r in records]
        above = [r["diagnostics"]["saturation"].get(layer, {}).get("above", float("nan")) for r in records]
        line, = ax.plot(steps, below, "-", label=f"{layer} <= 0")
        ax.plot(steps, above, "--", color=line.get_color(), label=f"{layer} > top")
    # the report's title names the run; the plot says what it shows (it was titled "Gradient fidelity ..." alone)
    ax.set(xlabel="step", ylabel="fraction of pre-activations",
           title=f"{title}: saturation over training" if title else "saturation over training")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def training_markdown(records: list[dict[str, Any]]) -> str:
    """First and last hook records: whole-model cosine per STE, saturation and flip ratio."""
    if not records:
        return "No diagnostics hook records in this run (train with `--diagnose-every N`).\n"
    picks = [records[0], records[-1]] if len(records) > 1 else [records[0]]
    stes = list(records[0]["diagnostics"]["cosine"])
    rows = [[r["step"], *[_fmt(r["diagnostics"]["cosine"][s].get(MODEL)) for s in stes],
             _fmt((r["diagnostics"].get("flip") or {}).get(MODEL))] for r in picks]
    text = (f"{len(records)} hook records (one batch each, width {records[0]['diagnostics']['width']} alpha).\n\n"
            + markdown_table(["step", *[f"cos {s}" for s in stes], "code flips since previous"], rows))
    layers = list(records[-1]["diagnostics"]["saturation"])
    sat = [[layer, *[f"{_fmt(r['diagnostics']['saturation'][layer]['below'])} / "
                     f"{_fmt(r['diagnostics']['saturation'][layer]['above'])}" for r in picks]] for layer in layers]
    text += "\nSaturation (fraction <= 0 / fraction above the top level) at the first and last record:\n\n"
    text += markdown_table(["layer", *[f"step {r['step']}" for r in picks]], sat)
    return text


def statistics_markdown(stats: dict[str, dict]) -> str:
    rows = [[name, _fmt(s["below"]), _fmt(s["inside"]), _fmt(s["above"]), _fmt(s["alpha"], 4),
             " ".join(_fmt(f, 3) for f in s["level_fractions"])] for name, s in stats.items()]
    return markdown_table(["layer", "<= 0", "inside", "> top", "alpha", "fraction per level"], rows)


def zeroth_order_markdown(rows: list[dict[str, Any]]) -> str:
    refs = [k for k in rows[0] if k.startswith("smoothed(")]
    table = [[r["direction"], f"{r['zeroth_order']:.4g} ± {r['zeroth_order_se']:.2g}",
              *[f"{r[k]:.4g}" for k in refs]] for r in rows]
    return ("Directional derivative of the loss along each mean gradient direction (unit length): zeroth order on "
            "the real quantized loss (parameter-space smoothing) vs autograd on each activation-smoothed loss. "
            "Positive: minus that direction is a descent direction.\n\n"
            + markdown_table(["direction", "zeroth order (real loss)", *refs], table))


def two_layer_markdown(report: dict[str, Any]) -> str:
    rows = [[r["ste"], r["reference"], _fmt(r["diagnostic_cosine"], 4), _fmt(r["diagnostic_se"], 4),
             _fmt(r["closed_form_cosine"], 4), f"{r['z_score']:+.2f}"] for r in report["rows"]]
    source = report["rows"][0]["closed_form_source"] if report["rows"] else ""
    return (f"Two-layer Gaussian model (m={report['m']}, n={report['n']}, {report['samples']} samples; closed form "
            f"from {source}); cosine w.r.t. w:\n\n"
            + markdown_table(["STE", "reference", "diagnostic", "s.e.", "closed form", "z"], rows))


def write_report(out_dir: str | Path, *, title: str, meta: dict[str, Any], result: FidelityResult | None = None,
                 stats: dict[str, dict] | None = None, records: list[dict[str, Any]] | None = None,
                 two_layer: dict[str, Any] | None = None, zeroth_order: list[dict[str, Any]] | None = None,
                 findings: list[dict[str, Any]] | None = None) -> list[Path]:
    """Write ``results.json``, ``report.md`` and the plots that the given parts allow; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, sections = [], [f"# {title}\n", markdown_table(["setting", "value"], [[k, v] for k, v in meta.items()])]
    data: dict[str, Any] = {"meta": meta}
    if findings:
        data["findings"] = findings
        sections.append("## Findings\n\n" + "\n".join(f"- {f['text']}" for f in findings) + "\n")
    if result is not None:
        sections.append("## Gradient fidelity\n\n" + fidelity_markdown(result) + f"\n![per layer]({LAYER_PLOT})\n")
        paths.append(plot_layer_cosines(result, out / LAYER_PLOT, title=title))
        data["fidelity"] = result.to_dict()
    if stats is not None:
        sections.append("## Activation statistics\n\n" + statistics_markdown(stats))
        data["activations"] = stats
    if records:
        sections.append("## Over training (DiagnosticsHook)\n\n" + training_markdown(records)
                        + f"\n![cosine]({TRAINING_PLOT})\n![saturation]({SATURATION_PLOT})\n")
        paths.append(plot_cosine_over_training(records, out / TRAINING_PLOT, title=title))
        paths.append(plot_saturation_over_training(records, out / SATURATION_PLOT, title=title))
        data["hook_records"] = len(records)
    if zeroth_order:
        sections.append("## Zeroth-order check\n\n" + zeroth_order_markdown(zeroth_order))
        data["zeroth_order"] = zeroth_order
    if two_layer is not None:
        sections.append("## Cross-check with the theory\n\n" + two_layer_markdown(two_layer))
        data["two_layer"] = two_layer
    paths.append(write_json(out / JSON_NAME, data))
    paths.append(write_text(out / MARKDOWN_NAME, "\n".join(sections)))
    return paths
