"""``stelab symmetry`` (Gongyo & Ishikawa 2021): :class:`SymmetryConfig` -> :func:`run_symmetry` on
:mod:`stelab.theory.symmetry` -> stationary-point tables, clipped-ReLU limits, and coarse gradient descent.

Writes ``report.md``, ``results.json``, ``config.json`` and ``symmetry.png`` into the run folder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import ste as ste_registry
from ..io import JsonConfig, markdown_table, save_figure, write_json, write_text
from ..ste import PAPER_STES
from ..theory.symmetry import DATASETS, WeightedData, coarse_descent, misspecified_labels, sample_inputs
from ..theory.symmetry_exact import AngularModel, crelu_scaling, exact_descent, loglog_slope
from ..theory.symmetry_stationary import (
    enumeration_gap,
    radial_along_ray,
    ray_behaviour,
    stationary_points_analytic,
    stationary_points_numeric,
)
from .shape import finding

ZERO_TOL = 1e-12  # a coarse gradient this small is zero (quadrature is exact to ~1e-16 here)


@dataclass(frozen=True)
class SymmetryConfig(JsonConfig):
    """What ``stelab symmetry`` computes. ``stes=()`` means every registered STE."""

    kappa: float = 0.25
    b: float = 1.0
    tilt: float = 0.4
    steps: int = 1500
    lr: float = 0.5
    samples: int = 10000
    seed: int = 0
    stes: tuple[str, ...] = field(default=())
    quick: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "stes", tuple(self.stes))
        for name in self.stes:
            ste_registry.get(name)  # raises with the valid names
        AngularModel(kappa=self.kappa, b=self.b, tilt=self.tilt)  # validates the model parameters
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if not (isinstance(self.samples, int) and self.samples >= 100):
            raise ValueError(f"samples must be an int >= 100, got {self.samples!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")

    def ste_names(self) -> list[str]:
        return list(self.stes) or ste_registry.names()


def _ray_cell(r: dict) -> str:
    if r["scale_invariant"]:
        where = "zero on the whole ray" if r["norm_at_1"] < ZERO_TOL else "no zero on the ray"
        return f"{r['norm_at_1']:.3g} ({where})"
    zeros = [f"{s:.4g}" for s, g in zip(r["zero_norms"], r["grad_norm_at_zero"]) if g < ZERO_TOL]
    if r["norm_at_1"] < ZERO_TOL:
        return "0 (v=0)"
    if zeros:
        return f"{r['norm_at_1']:.3g} (zero at ‖w‖={', '.join(zeros)})"
    if r["zero_norms"]:
        near = ", ".join(f"{s:.3g}: {g:.2g}" for s, g in zip(r["zero_norms"], r["grad_norm_at_zero"]))
        return f"{r['norm_at_1']:.3g} (radial part 0 but ‖g‖ > 0 at ‖w‖={near})"
    return f"{r['norm_at_1']:.3g} (no zero for ‖w‖ in [0.25, 1000])"


def stationary_section(model: AngularModel, stes: list[str], s_grid: np.ndarray, grid: int) -> dict:
    """Both enumerations, their agreement, and each STE's coarse gradient on the ray through each point."""
    analytic = stationary_points_analytic(model)
    numeric = stationary_points_numeric(model, grid=grid)
    diff = enumeration_gap(analytic, numeric)
    points = []
    for p in analytic:
        rays = {s: ray_behaviour(model, p, s, s_grid).to_dict() for s in stes}
        points.append({"theta": p.theta, "v": p.v, "loss": p.loss, "kind": p.kind, "rays": rays})
    best = min(analytic, key=lambda p: p.loss)
    curves = {s: radial_along_ray(model, best, s, s_grid).tolist() for s in stes}
    return {"model": model.to_dict(), "points": points, "max_analytic_numeric_gap": diff,
            "numeric_points": [dict(n.__dict__) for n in numeric],
            "radial_at_global_minimum": {"theta": best.theta, "s": s_grid.tolist(), "radial": curves}}


def limits_section(tilt: float, cs: np.ndarray) -> dict:
    """Clipped-ReLU limits on a two-unit network, for tilted (asymmetric) and symmetric inputs."""
    v = torch.tensor([0.7, -0.4], dtype=torch.float64)
    W = torch.tensor([[0.8, 0.3], [-0.5, 0.9]], dtype=torch.float64)
    out = {}
    for name, t in (("asymmetric", tilt), ("symmetric", 0.0)):
        model = AngularModel(kappa=0.25, b=0.0, tilt=t)
        sc = crelu_scaling(model, v, W, cs)
        big = cs >= 30
        out[name] = {
            "tilt": t,
            **{k: val.tolist() for k, val in sc.items()},
            "slope_radial": loglog_slope(cs[big], sc["radial"][big]),
            "slope_tangential": loglog_slope(cs[big], sc["tangential"][big]),
            "slope_large_c_gap": loglog_slope(cs[big], sc["large_c_gap"][big]),
            "breaking_term_norm": float(model.symmetry_breaking_term(v, W).norm()),
            "true_grad_norm": float(model.true_grad_w(v, W).norm()),
        }
    return out


def trajectories_section(config: SymmetryConfig, stes: list[str], progress: bool) -> dict:
    out = {}
    jobs = [(d, s) for d in DATASETS if d != "gaussian" for s in stes]
    for dataset, name in tqdm(jobs, desc="coarse gradient descent", disable=not progress, leave=False):
        x = sample_inputs(dataset, config.samples, config.seed)
        data = WeightedData.empirical(x, misspecified_labels(x, config.kappa, 0.0))
        tr = coarse_descent([0.5], [[1.0, 0.3]], data, name, lr=config.lr, steps=config.steps,
                            record_every=max(config.steps // 300, 1))
        norms = tr.w_norm[:, 0]
        half = len(norms) // 2
        out.setdefault(dataset, {})[name] = {
            "w_norm": norms.tolist(), "loss": tr.loss.tolist(), "final_loss": float(tr.loss[-1]),
            "final_w_norm": float(norms[-1]),
            # relative growth of ||w|| over the second half of the run: ~0 when it settles
            "late_growth": float((norms[-1] - norms[half]) / norms[half]),
            "final_grad_norm": float(tr.grad_norm[-1]),
        }
    return out


def exact_descent_section(config: SymmetryConfig, stes: list[str], progress: bool) -> list[dict]:
    """Where (coarse) gradient descent on the population loss goes when started at a global minimum, ||w|| = 1."""
    rows = []
    models = [AngularModel(kappa=config.kappa, b=0.0), AngularModel(kappa=config.kappa, b=config.b)]
    jobs = [(m, s) for m in models for s in [None, *stes]]
    for model, name in tqdm(jobs, desc="descent on the exact loss", disable=not progress, leave=False):
        points = stationary_points_analytic(model)
        start = next(p for p in points if p.kind == "global minimum")
        v, W, g = exact_descent(model, torch.tensor([start.v], dtype=torch.float64), start.w(1.0), name,
                                lr=1.0, steps=60 if config.quick else 400)
        theta = math.atan2(float(W[0, 1]), float(W[0, 0]))
        nearest = min(points, key=lambda p: abs(math.remainder(theta - p.theta, 2 * math.pi)))
        rows.append({"model": model.to_dict(), "ste": name or "true gradient", "start_theta": start.theta,
                     "final_theta": theta, "final_w_norm": float(W.norm()), "final_v": float(v[0]),
                     "final_loss": model.loss(v, W), "final_update_norm": g,
                     "nearest_stationary": {"theta": nearest.theta, "kind": nearest.kind}})
    return rows


def run_symmetry(config: SymmetryConfig, out: str | Path, progress: bool = True) -> dict:
    """Every section, written to the run folder ``out``; ``findings``: one per STE (:func:`by_ste`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small problems: extra intra-op threads only spin, badly so on shared CPUs
    try:
        return _run(config, Path(out), progress)
    finally:
        torch.set_num_threads(threads)


def _run(config: SymmetryConfig, out_dir: Path, progress: bool) -> dict:
    start = time.time()
    stes = config.ste_names()
    s_grid = np.geomspace(0.25, 1e3, 25 if config.quick else 49)
    grid = 72 if config.quick else 240
    cs = np.geomspace(0.1, 3000, 12 if config.quick else 25)
    models = [AngularModel(kappa=config.kappa, b=0.0), AngularModel(kappa=config.kappa, b=0.0, radial="circle"),
              AngularModel(kappa=config.kappa, b=config.b)]
    results: dict = {"config": config.to_dict(), "stationary": []}
    steps = tqdm(total=len(models) + 3, desc="stelab symmetry", disable=not progress)
    for model in models:
        results["stationary"].append(stationary_section(model, stes, s_grid, grid))
        steps.update()
    results["limits"] = limits_section(config.tilt, cs)
    steps.update()
    results["trajectories"] = trajectories_section(config, stes, progress)
    steps.update()
    results["exact_descent"] = exact_descent_section(config, stes, progress)
    steps.update()
    steps.close()
    results["seconds"] = time.time() - start
    results["by_ste"] = by_ste(results)
    results["findings"] = [finding(f"symmetry:{v['ste']}", line) for v, line in zip(results["by_ste"],
                                                                                      _lines(results))]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", config.to_dict())
    write_json(out_dir / "results.json", results)
    _figure(results, out_dir / "symmetry.png")
    write_text(out_dir / "report.md", render_markdown(results))
    return results


def _growth_word(growth: float) -> str:
    return "settles" if abs(growth) < 0.01 else ("still growing" if abs(growth) < 0.25 else "drifts")


def by_ste(results: dict) -> list[dict]:
    """Per STE, in one row: does its coarse gradient vanish on the ray through the global minimum (b = 0, disk), does
    ``‖w‖`` settle under coarse gradient descent on samples, and where exact descent from the global minimum of the
    second model ends."""
    points = results["stationary"][0]["points"]
    best = min(points, key=lambda p: p["loss"])
    second = results["exact_descent"][len(results["exact_descent"]) // 2:]
    rows = []
    for name, ray in best["rays"].items():
        zeros = [z for z, g in zip(ray["zero_norms"], ray["grad_norm_at_zero"]) if g < ZERO_TOL]
        at_min = f"zero at ‖w‖ = {zeros[0]:.4g}" if zeros else f"never zero (‖g‖ = {ray['norm_at_1']:.2g} at ‖w‖ = 1)"
        growth = {d: by[name]["late_growth"] for d, by in results["trajectories"].items() if name in by}
        worst = max(growth.values(), key=abs) if growth else 0.0
        ends = next((r for r in second if r["ste"] == name), None)
        rows.append({"ste": name, "scale_invariant": ray["scale_invariant"], "global_minimum_ray": at_min,
                     "w_norm_growth": growth, "w_norm": _growth_word(worst),
                     "exact_descent_b1_ends_near": ends["nearest_stationary"]["kind"] if ends else None})
    return rows


def _lines(results: dict) -> list[str]:
    """One sentence per STE: its finding."""
    out = []
    for v in results["by_ste"]:
        growth = ", ".join(f"{g:+.1%}" for g in v["w_norm_growth"].values())
        out.append(f"{v['ste']}: global-minimum ray {v['global_minimum_ray']}; ‖w‖ {v['w_norm']} ({growth}); "
                   f"b={results['config']['b']:g} descent ends near {v['exact_descent_b1_ends_near']}")
    return out


def render_markdown(results: dict) -> str:
    lines = ["# Scale symmetry and symmetry breaking (Gongyo & Ishikawa 2021)\n",
             "Network `F(x) = v·1{w·x > 0}` (one unit), squared loss; inputs `x = R(cos φ, sin φ)`, labels "
             "`y = κ + cos φ + b cos 3φ`. Coarse gradients by exact quadrature; derivation in `docs/symmetry.md`.\n",
             "## Findings\n",
             "Per STE: its coarse gradient on the ray through the global minimum (b = 0, inputs on the disk); ‖w‖ "
             "under coarse gradient descent on samples (relative growth over the second half of the run, per data "
             "set: < 1% settles, < 25% still growing, else drifts); the stationary point nearest to where descent on "
             f"the exact loss of the b = {results['config']['b']:g} model ends, started at its global minimum.\n",
             markdown_table(["STE", "scale-invariant", "global-minimum ray", "‖w‖ under coarse GD",
                             f"b = {results['config']['b']:g}: ends near"],
                            [[v["ste"], v["scale_invariant"], v["global_minimum_ray"],
                              f"{v['w_norm']} ({', '.join(f'{g:+.1%}' for g in v['w_norm_growth'].values())})",
                              v["exact_descent_b1_ends_near"]] for v in results["by_ste"]])]
    for sec in results["stationary"]:
        m = sec["model"]
        stes = list(sec["points"][0]["rays"])
        lines.append(f"## Stationary points: κ={m['kappa']}, b={m['b']}, inputs on the {m['radial']}\n")
        lines.append(f"Analytic enumeration: {len(sec['points'])} points; numerical: {len(sec['numeric_points'])}; "
                     f"largest gap in (θ, v, loss) {sec['max_analytic_numeric_gap']:.1e}.\n")
        lines.append("Cells: coarse-gradient norm at ‖w‖ = 1, and where on the ray it vanishes.\n")
        rows = [[f"{p['theta']:.6f}", f"{p['v']:.6f}", f"{p['loss']:.6f}", p["kind"]]
                + [_ray_cell(p["rays"][s]) for s in stes] for p in sec["points"]]
        lines.append(markdown_table(["θ", "v", "loss", "type", *stes], rows))
    lim = results["limits"]
    lines.append("## Limits of the clipped-ReLU coarse gradient (two units)\n")
    rows = []
    for name, d in lim.items():
        small = max(g for c, g in zip(d["c"], d["small_c_gap"]) if c <= 0.5)
        rows.append([name, d["tilt"], f"{small:.1e}", f"{d['large_c_gap'][-1]:.2e} (c={d['c'][-1]:.0f})",
                     f"{d['slope_large_c_gap']:.3f}", f"{d['slope_radial']:.3f}", f"{d['slope_tangential']:.3f}",
                     f"{d['breaking_term_norm']:.3g}"])
    lines.append(markdown_table(["inputs", "tilt", "max ‖g_crelu(cW) − g_relu(W)‖, c ≤ 0.5",
                                 "‖c g_crelu(cW) − (∇f + breaking term)‖", "slope of that gap",
                                 "slope radial", "slope tangential", "‖breaking term‖"], rows))
    lines.append("Slopes are least-squares fits of log-quantity vs log c over c ≥ 30; theory: gap −1, radial −2, "
                 "tangential −1.\n")
    lines.append("## Descent on the exact population loss, started at a global minimum with ‖w‖ = 1\n")
    lines.append("400 steps, learning rate 1; `true gradient` descends ∇f itself. The last column is the stationary "
                 "point nearest in angle to where the run ended.\n")
    rows = [[f"b={r['model']['b']}", r["ste"], f"{r['start_theta']:.4f}", f"{r['final_theta']:.4f}",
             f"{r['final_w_norm']:.4g}", f"{r['final_loss']:.5f}", f"{r['final_update_norm']:.1e}",
             f"{r['nearest_stationary']['kind']} (θ={r['nearest_stationary']['theta']:.3f})"]
            for r in results["exact_descent"]]
    lines.append(markdown_table(["model", "direction", "start θ", "final θ", "final ‖w‖", "final loss",
                                 "final ‖update‖", "ends near"], rows))
    lines.append("## Coarse gradient descent on non-Gaussian data\n")
    for dataset, by_ste in results["trajectories"].items():
        lines.append(f"### {dataset}\n")
        rows = [[s, f"{d['final_w_norm']:.4g}", f"{d['late_growth']:+.3g}", f"{d['final_loss']:.5f}",
                 f"{d['final_grad_norm']:.2e}"] for s, d in by_ste.items()]
        lines.append(markdown_table(["STE", "final ‖w‖", "relative growth of ‖w‖ over 2nd half", "final loss",
                                     "final ‖g_w‖"], rows))
    lines.append(f"![figure](symmetry.png)\n\nComputed in {results['seconds']:.1f} s.\n")
    return "\n".join(lines)


STE_STYLES = ("-", "--", "-.", ":")


def _ste_style(i: int, name: str) -> dict:
    """One colour and dash pattern per STE, the same in every panel; the paper's three drawn thicker."""
    return {"color": f"C{i % 10}", "ls": STE_STYLES[i % len(STE_STYLES)],
            "lw": 2.4 if name in PAPER_STES else 1.3}


def _figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5), layout="constrained")
    for ax, (dataset, by_ste) in zip(axes[0], results["trajectories"].items()):
        for i, (s, d) in enumerate(by_ste.items()):
            steps = np.linspace(0, results["config"]["steps"], len(d["w_norm"]))
            ax.plot(steps, d["w_norm"], label=s, **_ste_style(i, s))
        ax.set(yscale="log", xlabel="step", ylabel="‖w‖", title=f"(a) coarse GD on {dataset.replace('_', ' ')} data")
        ax.grid(alpha=0.3)
    ax = axes[1, 0]
    for name, style in (("asymmetric", "-"), ("symmetric", "--")):
        d = results["limits"][name]
        ax.loglog(d["c"], d["radial"], "C0" + style, label=f"radial ({name})")
        ax.loglog(d["c"], d["tangential"], "C1" + style, label=f"tangential ({name})")
        ax.loglog(d["c"], np.maximum(d["large_c_gap"], 1e-18), "C2" + style, label=f"‖c g − limit‖ ({name})")
    ax.set(xlabel="scale c", ylabel="norm", title="(b) clipped-ReLU coarse gradient at cW (two units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ray = results["stationary"][0]["radial_at_global_minimum"]
    for i, (s, radial) in enumerate(ray["radial"].items()):
        ax.plot(ray["s"], radial, **_ste_style(i, s))
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xscale="log", xlabel="‖w‖ on the ray", ylabel="radial part ŵ·g  (> 0: ‖w‖ shrinks)",
           title=f"(c) on the ray through the global minimum (θ={ray['theta']:.3f}, disk)")
    ax.set_yscale("symlog", linthresh=1e-4)
    # A margin of half the extreme values (0.18 decade on symlog's log parts): autoscale left a constant curve
    # (relu's radial part) lying on the frame.
    values = [v for radial in ray["radial"].values() for v in radial if np.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        ax.set_ylim(lo - 0.5 * abs(lo) - 1e-5, hi + 0.5 * abs(hi) + 1e-5)
    ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="STE", fontsize=9)
    fig.suptitle("Scale symmetry: ‖w‖ under coarse gradient descent (a), clipped-ReLU limits (b), radial part "
                 "on a minimum's ray (c)", fontsize=12)
    save_figure(fig, path)
