"""``stelab theory``: run the two-layer experiments and write ``report.md``, ``results.json`` and PNG plots.

The report states each claim of Yin et al. (2019) (and the derived ones of ``docs/theory.md``), the measured
evidence and whether it held; ``held`` is computed by the experiment from its numbers.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ...io import markdown_table, save_figure, write_json, write_text  # noqa: E402
from ...ste import PAPER_STES  # noqa: E402
from ...theory import two_layer as tl  # noqa: E402
from . import experiments as ex  # noqa: E402

COLORS = dict(zip(PAPER_STES, ("tab:red", "tab:blue", "tab:green")))

# Where each claim comes from. "Yin et al.": a statement of the paper's abstract (positive correlation of the
# expected coarse gradient with the true gradient, descent, convergence to a critical point, instability of a poor
# STE near some local minima); the formulas, constants, rates and the choice of STEs are derived or measured here.
# Paper-internal numbering (propositions, lemmas, remarks) is not cited: we could not trace it to a text we hold.
SOURCES = {
    "closed_vs_mc": "derived here", "closed_vs_integrated": "derived here",
    "correlation": "Yin et al. (positive correlation); identities derived here",
    "cosine_positive": "Yin et al. (positive correlation); for these STEs: here",
    "clipped_vs_norm": "derived here", "spurious_identity_norm": "derived here",
    "spurious_ratio": "derived here (a measure of the instability)",
    "descent_monotone": "Yin et al. (descent direction); monotone at this eta: here",
    "descent_converges": "Yin et al. (convergence to a critical point)",
    "identity_unstable": "Yin et al. (a poor STE is unstable near some local minima); identity as that STE: here",
    "figure1": "derived here (the sampled coarse gradient's loss along a line)",
}


def run_theory(cfg: ex.TheoryConfig, out: str | Path, progress: bool = True) -> dict:
    """Run every experiment, write the run folder ``out`` and return ``results`` (also in ``results.json``); its
    ``findings`` are every claim tested, with whether it held."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # Small tensors: one thread avoids oversubscription on a shared machine (measured 5-10x faster here).
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        prob = ex.problem(cfg)
        total = 6 + 3 * (cfg.starts + 1) + len(cfg.figure1_samples)
        with tqdm(total=total, desc="stelab theory", disable=not progress) as bar:
            tick = bar.update
            results = {"config": cfg.to_dict(), "teacher": prob}
            results["monte_carlo"] = ex.monte_carlo_table(cfg, prob)
            tick()
            results["correlation"] = ex.correlation_identities(cfg, prob)
            tick()
            results["cosine"] = ex.cosine_curves(cfg, prob)
            tick()
            results["spurious"] = ex.spurious_ratio(cfg, prob)
            tick()
            results["critical_points"] = _critical_table(prob)
            tick()
            results["descent"] = ex.descent_runs(cfg, prob, progress=tick)
            results["figure1"] = ex.figure1(cfg, prob, progress=tick)
            tick()
    finally:
        torch.set_num_threads(threads)
    results["findings"] = [c for key in ("monte_carlo", "correlation", "cosine", "spurious", "descent", "figure1")
                           for c in results[key]["findings"]]
    results["seconds"] = time.perf_counter() - start
    _plots(out, results)
    write_text(out / "report.md", _markdown(results))
    write_json(out / "results.json", _jsonable(results))
    return results


def _critical_table(prob: dict) -> list[dict]:
    rows = []
    for p in tl.critical_points(prob["v_star"], prob["w_star"]):
        gv, gw = tl.population_grad(p.v, p.w, prob["v_star"], prob["w_star"])
        eg = {n: float(np.linalg.norm(tl.expected_coarse_grad(p.v, p.w, prob["v_star"], prob["w_star"], n)))
              for n in ex.THREE}
        rows.append({"kind": p.kind, "theta": p.theta, "loss": tl.population_loss(p.v, p.w, prob["v_star"],
                                                                                   prob["w_star"]),
                     "grad_v_norm": float(np.linalg.norm(gv)), "grad_w_norm": float(np.linalg.norm(gw)),
                     **{f"E g [{n}]": eg[n] for n in ex.THREE}})
    return rows


def _thinned(traj, first: int = 50, points: int = 150) -> dict:
    """A trajectory's records at every step of the first ``first`` and ~``points`` steps overall (keeps
    ``results.json`` small; the plots use the same idea)."""
    data = traj.to_dict()
    count = len(traj.records["loss"])
    keep = np.unique(np.concatenate([np.arange(min(first, count)), np.arange(0, count, max(1, count // points)),
                                     [count - 1]]))
    return {**data, "step": keep, **{k: traj.array(k)[keep] for k in traj.records}}


def _jsonable(results: dict) -> dict:
    """Trajectory objects become thinned per-step records; numpy arrays are handled by ``write_json``."""
    runs = results["descent"]["runs"]
    descent = {**results["descent"], "runs": {
        "random": {n: [_thinned(t) for t in ts] for n, ts in runs["random"].items()},
        "spurious": {n: _thinned(t) for n, t in runs["spurious"].items()},
        "sampled": {n: _thinned(t) for n, t in runs["sampled"].items()}}}
    fig1 = {**results["figure1"], "curves": {str(k): v for k, v in results["figure1"]["curves"].items()}}
    return {**results, "descent": descent, "figure1": fig1}


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------
def _plots(out: Path, results: dict) -> None:
    _plot_cosine(out, results["cosine"])
    _plot_descent(out / "descent_random.png", results["descent"]["runs"]["random"], "from random starts")
    _plot_descent(out / "descent_spurious.png", {n: [t] for n, t in results["descent"]["runs"]["spurious"].items()},
                  "from near the spurious minimizer")
    _plot_figure1(out / "figure1.png", results["figure1"])


def _plot_cosine(out: Path, cos: dict) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, vals in cos["by_theta"].items():
        style = ({"color": COLORS[name], "lw": 2.5, "ls": (0, (6, 2)) if name == "relu" else "-", "zorder": 3}
                 if name in COLORS else {"lw": 1.0, "ls": "--"})
        a.plot(cos["thetas"], vals, label=name, **style)
    a.set(xlabel="theta = angle(w, w*)", ylabel="cos(E g_mu, df/dw)", ylim=(-1.05, 1.05),
          title="All registered STEs, ||w|| = 1")
    a.axhline(0, color="k", lw=0.5)
    a.legend(fontsize=8, ncol=2)
    for key, vals in cos["by_norm"].items():
        line, = b.semilogx(cos["norms"], vals["cosine"], label=f"clipped relu, theta = {float(key):.2f}")
        b.axhline(cos["relu_cosine"][key], color=line.get_color(), ls=":", lw=1)
    b.set(xlabel="||w|| (clip level 1)", ylabel="cos(E g_crelu, df/dw)",
          title="Clipped relu vs ||w|| (dotted: relu)")
    b.legend(fontsize=8)
    fig.suptitle("Cosine of the expected coarse gradient with the true gradient df/dw (fixed v)", y=1.02)
    save_figure(fig, out / "cosine.png")


# relu and clipped relu often coincide (same path while ||w|| stays below the clip level): relu is drawn as a wide pale
# band underneath, clipped relu as a dashed line with markers on top; identity thin, with a dot at every drawn step
# so that its step-to-step oscillation reads as a zigzag, not a solid block.
DESCENT_STYLE = {
    "identity": {"lw": 0.7, "marker": ".", "ms": 3, "zorder": 2},
    "relu": {"lw": 4.0, "alpha": 0.35, "zorder": 1},
    "clipped_relu": {"lw": 1.4, "ls": "--", "marker": "s", "ms": 3.5, "markevery": 0.08, "zorder": 3},
}


def _plot_descent(path: Path, runs: dict, title: str) -> None:
    """Loss, angle and ||w|| against the step on a log axis (step + 1), so the fast first steps are spread out."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for name, trajs in runs.items():
        for i, t in enumerate(trajs):
            steps = np.arange(len(t.records["loss"]))
            # Every step of the first 100 (the fast, interesting part), then ~300 log-spaced ones.
            keep = np.unique(np.concatenate([steps[:100], np.geomspace(1, len(steps), 300).astype(int) - 1]))
            kw = {"color": COLORS[name], "label": name if i == 0 else None, **DESCENT_STYLE.get(name, {"lw": 1.0})}
            axes[0].plot(keep + 1, np.maximum(t.array("loss")[keep], 1e-16), **kw)
            axes[1].plot(keep + 1, t.array("theta")[keep], **kw)
            axes[2].plot(keep + 1, t.array("w_norm")[keep], **kw)
    for ax, label in zip(axes, ("population loss f", "theta = angle(w, w*)", "||w||")):
        ax.set(xlabel="step + 1", ylabel=label, xscale="log")
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    axes[1].set_yticks([0, math.pi / 2, math.pi], ["0", "pi/2", "pi"])
    axes[0].legend(title="STE")
    fig.suptitle(f"Exact coarse gradient descent {title}")
    save_figure(fig, path)


def _plot_figure1(path: Path, fig1: dict) -> None:
    counts = list(fig1["curves"])
    fig, axes = plt.subplots(1, len(counts), figsize=(3.2 * len(counts), 3.4), sharex=True)
    for ax, count in zip(np.atleast_1d(axes), counts):
        ax.plot(fig1["etas"], fig1["curves"][count], drawstyle="steps-post", lw=1.2)
        ax.set(title=f"N = {count}", xlabel="step size eta")
    np.atleast_1d(axes)[0].set_ylabel("empirical loss at w - eta g/||g||")
    fig.suptitle("Empirical loss along the negative sampled coarse gradient (relu STE), by sample size N", y=1.04)
    fig.subplots_adjust(wspace=0.35)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list]) -> str:
    """:func:`markdown_table` with ``|`` (as in ``||w||``) escaped so it cannot split a cell."""
    def esc(x):  # "<E g, df/dw>" would be read as an HTML tag
        return x.replace("|", "\\|").replace("<", "&lt;") if isinstance(x, str) else x

    return markdown_table([esc(h) for h in headers], [[esc(c) for c in row] for row in rows])


def _markdown(r: dict) -> str:
    cfg, prob = r["config"], r["teacher"]
    held = sum(c["held"] for c in r["findings"])
    parts = [
        "# Theory lab: the two-linear-layer model of Yin et al. (ICLR 2019)\n",
        f"m = {cfg['m']} patches, n = {cfg['n']} inputs, teacher seed {prob['seed']}: "
        f"v* = {np.array2string(prob['v_star'], precision=3)}, ||w*|| = 1. "
        f"Float64 throughout; wall time {r['seconds']:.1f} s. Derivations: `docs/theory.md`.\n",
        f"## Findings: the claims tested ({held} of {len(r['findings'])} held)\n",
        "`source`: *Yin et al.* marks what the paper's abstract states; everything else (formulas, constants, rates, "
        "which STEs) is derived or measured here.\n",
        _table(["claim", "source", "evidence", "held"],
                       [[c["text"], SOURCES.get(c["id"], "derived here"), c["evidence"],
                         "yes" if c["held"] else "**NO**"] for c in r["findings"]]),
        "## Closed form vs Monte Carlo\n",
        f"z = (Monte Carlo mean - exact) / standard error, worst coordinate; {cfg['mc_samples']} samples of Z per "
        "point, the same draws for every STE. Method `integrate` = the 2-D recipe (one variable exact, the other "
        "by Gauss-Legendre).\n",
        _table(["point", "quantity", "exact by", "max abs z", "relative error"],
                       [[row["point"], row["quantity"], row["method"], row["max_abs_z"], f"{row['rel_error']:.2e}"]
                        for row in r["monte_carlo"]["rows"]]),
        "## Critical points (derived in `docs/theory.md`)\n",
        _table(["kind", "theta", "f", "||df/dv||", "||df/dw||", *[f"||E g {n}||" for n in ex.THREE]],
                       [[c["kind"], c["theta"], c["loss"], f"{c['grad_v_norm']:.1e}", f"{c['grad_w_norm']:.1e}",
                         *[f"{c[f'E g [{n}]']:.3g}" for n in ex.THREE]] for c in r["critical_points"]]),
        "At the kinks theta = 0 and pi, df/dw is the minimum-norm Clarke subgradient (0).\n",
        "## Cosine of the expected coarse gradient with the true gradient\n",
        "![cosine](cosine.png)\n",
        "## Near the spurious minimizer\n",
        "theta = pi - eps, v = v_spurious + eps * (unit direction); ratio "
        "`(||df/dv||^2 + ||E g||^2) / (||df/dv||^2 + <E g, df/dw>)`.\n",
        _table(["eps", *ex.THREE], [[f"{e:.0e}", *[f"{r['spurious']['ratios'][n][i]:.4g}" for n in ex.THREE]]
                                           for i, e in enumerate(r["spurious"]["eps"])]),
        "## Coarse gradient descent\n",
        f"eta = {cfg['eta']}, {cfg['steps']} steps, exact expectations (rows `sampled`: mini-batches of "
        f"{cfg['batch_size']} fresh inputs per step from random start 0). Random starts: ||w0|| = 1, "
        f"v0 = 0.1 N(0, I); near-spurious start: theta0 = pi - {cfg['spurious_angle']}, v0 = v_spurious + "
        "0.01 N(0, I). `increases` counts steps where f went up by more than 1e-12 (1 + |f|).\n",
        _table(["start", "STE", "f0", "f final", "theta final", "min ||w||", "final ||w||", "increases",
                        "largest increase"],
                       [[d["start"], d["ste"], d["f0"], f"{d['f_final']:.3g}", f"{d['theta_final']:.3g}",
                         d["min_w_norm"], d["w_norm_final"], d["increases"], f"{d['max_increase']:.2g}"]
                        for d in r["descent"]["summary"]]),
        "![descent from random starts](descent_random.png)\n",
        "![descent near the spurious minimizer](descent_spurious.png)\n",
        "## Empirical loss along the negative sampled coarse gradient\n",
        "Only w moves, along the normalised mini-batch coarse gradient of the same N samples; `upward variation` ="
        " sum of increases / sum of |changes| over the step-size grid; `cos to E g` = cosine of the sampled "
        "direction with the expected one.\n",
        _table(["N", "distinct values", "increases", "decreases", "upward variation", "cos to E g"],
                       [[s["samples"], s["distinct_values"], s["increases"], s["decreases"],
                         f"{100 * s['upward_fraction']:.1f}%", f"{s['cos_to_expected']:.4f}"]
                        for s in r["figure1"]["stats"]]),
        "![figure 1](figure1.png)\n",
    ]
    return "\n".join(parts)
