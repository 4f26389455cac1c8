"""The card's run folder: ``report.md`` (one summary table first, then the verdict and what each column means),
``results.json``, ``card.png`` (each STE's ``mu'`` and its training accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ... import ste as ste_registry
from ...activations.lloyd import lloyd_alpha
from ...io import markdown_table, save_figure, write_json, write_text
from .config import ranked_by


def _num(value: Any, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _yes(value: Any) -> str:
    return {True: "yes", False: "**no**"}.get(value, "-")


def _cell(sections: dict, name: str, render) -> str:
    if name not in sections:  # a section this card did not run (the end point needs clipped relu among the STEs)
        return "-"
    part = sections[name]
    return "error (below)" if "error" in part else render(part)


def _fidelity(part: dict, clipped: dict | None) -> str:
    low, high = (part.get("cosine_ci") or [None, None])[:2]
    text = f"{_num(part.get('cosine'))} [{_num(low)}, {_num(high)}]"
    if clipped and "error" not in clipped and clipped.get("coarse_norm") and part.get("coarse_norm") is not None:
        text += f", length {part['coarse_norm'] / clipped['coarse_norm']:.2f}x"
    return text


def _best(t: dict) -> str:
    if t.get("best_accuracy") is None:
        return "-"
    first = t.get("best_accuracy_first1000")
    return (f"{100 * t['best_accuracy']:.2f} % ({t['best_lr']:g})"
            + (f"; first 1,000: {100 * first:.1f} %" if first is not None else ""))


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    clipped = results["stes"].get("clipped_relu", {}).get("fidelity")
    clipped_end = results["stes"].get("clipped_relu", {}).get("fidelity_end")
    for rank, label in enumerate(results["ranking"], 1):
        s = results["stes"][label]
        t = s["train"]
        rows.append([
            str(rank), f"`{label}`",
            _cell(s, "what", lambda p: f"{p['path']}, {_num(p['op_cost_vs_relu'], '.2f')}x"),
            _cell(s, "two_layer", lambda p: f"{_num(p['min_cosine'])} ({_yes(p['descent_everywhere'])})"),
            _cell(s, "two_layer", lambda p: f"{p['converged_fraction']:.0%} / {p['unstable_fraction']:.0%}"),
            _cell(s, "two_layer", lambda p: "yes" if p["spurious_min_stationary"] else "no"),
            _cell(s, "symmetry", lambda p: "keeps" if p["keeps_symmetry"] else
                  f"breaks ({_num(p['relative_change_under_scaling'], '.2g')})"),
            _cell(s, "classify", lambda p: f"{100 * p['accuracy']:.1f} %" + (
                f" (MNIST {100 * p['mnist_test_accuracy']:.1f} %)" if "mnist_test_accuracy" in p else "")),
            _cell(s, "fidelity", lambda p: _fidelity(p, clipped)),
            _cell(s, "fidelity_end", lambda p: _fidelity(p, clipped_end)),
            f"{100 * t['best_accuracy']:.2f} % ({t['best_lr']:g})" if t.get("best_accuracy") is not None else "-",
            f"{100 * t['common_accuracy']:.2f} %" if t.get("common_accuracy") is not None else "-",
        ] + ([_fidelity(s["fidelity_resnet20"], None) if "error" not in s["fidelity_resnet20"] else "error (below)",
              _best(s["train_resnet20"])] if "train_resnet20" in s else [])
          + ([_num(s["table1"].get(k), ".2f") for k in TABLE1_CELLS] if "table1" in s else []))
    return rows


HEADERS = ["rank", "STE", "1. path, op cost vs relu", "2. two-layer min cos (descent everywhere)",
           "2. CGD converged / unstable", "2. E g = 0 at the spurious min", "3. scale symmetry",
           "4. classifier accuracy", "5. fidelity cosine [95 % CI], length vs clipped relu",
           "5. the same at the clipped-relu end point", "6. LeNet-5 best (lr)",
           "6. at common lr"]


RESNET_HEADERS = ["5. ResNet-20 fidelity cosine", "6. ResNet-20 best (lr)"]
#: The full tier's Table 1 cells (mean test accuracy, %), keys of section ``table1``.
TABLE1_CELLS = ["lenet5 2-bit", "lenet5 4-bit", "resnet20 2-bit", "resnet20 4-bit"]


def _has_resnet(results: dict) -> bool:
    return all("train_resnet20" in s for s in results["stes"].values())


def _has_table1(results: dict) -> bool:
    return all("table1" in s for s in results["stes"].values())


def render_markdown(results: dict) -> str:
    c = results["config"]
    graded = ", ".join(f"`{s}`" for s in c["stes"])
    lines = [f"# STE report card: {graded}", "",
             f"{c['tier']} tier, {c['bits']} bits, {c['seeds']} seed(s), learning rates {c['lrs']}, references "
             f"{', '.join(c['against'])}; {results['seconds']:.0f} s in the last invocation (cells cached by an "
             "earlier one are read back).", "",
             f"**Recommendation.** {results['recommendation']}", "", "![card](card.png)", "",
             markdown_table(HEADERS + (RESNET_HEADERS if _has_resnet(results) else [])
                            + ([f"7. Table 1 {k} (%)" for k in TABLE1_CELLS] if _has_table1(results) else []),
                            summary_rows(results)), "",
             "## Verdict", "", f"Ranking rule: {results['rule']}.", "",
             f"- ranking at each STE's best rate: {', '.join(results['ranking'])}",
             f"- ranking at the common rate: {', '.join(results['ranking_common_lr'])} "
             f"({'changes' if results['ranking_changes_with_retuning'] else 'the same'} when each STE's rate is "
             "retuned)", "",
             "Do the cheap measures predict training? Spearman's rho over the card's STEs between the measure and the "
             "best-rate accuracy, with a permutation p-value (the chance that a random pairing correlates as "
             "strongly; with few STEs no correlation is significant):", "",
             markdown_table(["cheap measure", "rho", "p-value", "STEs"],
                            [[k, _num(v["rho"], "+.2f"), _num(v["p_value"], ".2f"), str(v["n"])]
                             for k, v in results["predictors"].items()]), "",
             "## The columns", "",
             "1. `fused`: the fused operator (a piecewise-constant `mu'`), `general`: the general path; the cost of "
             "one forward + backward against `torch.relu` on the same tensor (rough; see BENCHMARKS.md).",
             "2. Yin et al.'s two-layer Gaussian model: the smallest cosine over the angle between the expected "
             "coarse gradient and the true gradient (positive: a descent direction everywhere), coarse gradient "
             "descent from random starts (converged: at a critical point; unstable: the loss rose or ||w|| "
             "collapsed), and whether the expected coarse gradient vanishes at the spurious minimizer of the loss "
             "(relu and clipped relu: yes, so it is a stationary point of theirs; identity: no, and it is unstable "
             "there).",
             "3. Gongyo & Ishikawa's bias-free binary network: the relative change of the coarse gradient when the "
             "hidden weights are scaled by 1/4 or 4 (0: the STE keeps the scale symmetry).",
             "4. Long, Yin & Xin's two-layer quantized classifier trained by coarse gradient descent on the "
             "synthetic cones and subspaces: training accuracy.",
             "5. The float LeNet-5 quantized at the card's bits: whole-model cosine of the STE's coarse gradient "
             "with the Gaussian-smoothed reference extrapolated to zero width (`stelab diagnose`), its 95 % interval "
             "over batches, and the length of the mean coarse gradient relative to clipped relu's; then the same at "
             "the clipped-relu end point (LeNet-5 fine-tuned with clipped relu at the common rate), where training "
             "spends its time.",
             "6. LeNet-5 fine-tuned from the float checkpoint on MNIST (cosine schedule), test accuracy; in the "
             "standard and full tiers also ResNet-20 on CIFAR-10 (cosine, weight decay 5e-4, bf16 where native; all "
             "10,000 test images, which then decide the ranking, and at the best rate the first 1,000, the only "
             "ones identical to the official test set where ../shared/data says the rest went through JPEG).", ""]
    errors = [(label, name, part["error"]) for label, s in results["stes"].items() for name, part in s.items()
              if isinstance(part, dict) and "error" in part]
    failed = [(label, f) for label, s in results["stes"].items() for key in ("train", "train_resnet20")
              for f in s.get(key, {}).get("failed", [])]
    if errors or failed:
        lines += ["## What failed", ""]
        lines += [f"- `{label}`, section {name}: {err}" for label, name, err in errors]
        lines += [f"- `{label}`, training at lr {f['lr']:g} seed {f['seed']}: {f['why']}" for label, f in failed]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits = results["config"]["bits"]
    top = (2**bits - 1) * lloyd_alpha(bits)
    x = torch.linspace(-0.6 * top, 1.6 * top, 801, dtype=torch.float64)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]},
                                      constrained_layout=True)
    labels = results["ranking"]
    styles = ("-", "--", ":", "-.")
    for i, label in enumerate(labels):
        try:
            d = ste_registry.get(label).derivative(x, top)
        except Exception:  # noqa: BLE001 - a failing user STE is reported in the table, not plotted
            continue
        # steps overlap (relu and clipped relu agree on (0, top]): thicker lines first, and a style each
        left.plot(x.numpy(), d.numpy(), label=label, lw=max(1.0, 4.0 - 0.8 * i), ls=styles[i % 4], alpha=0.85)
    left.axvline(0, color="0.7", lw=0.8)
    left.axvline(top, color="0.7", lw=0.8, ls="--")
    left.set(xlabel=f"pre-activation x (dashed: top = L alpha, {bits} bits)", ylabel="mu'(x)",
             title="each STE's backward")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    section, network = ranked_by(results["stes"])
    best = [100 * (results["stes"][s][section]["best_accuracy"] or 0) for s in labels]
    common = [100 * (results["stes"][s][section]["common_accuracy"] or 0) for s in labels]
    pos = range(len(labels))
    right.barh([p + 0.2 for p in pos], best, height=0.4, label="best learning rate")
    right.barh([p - 0.2 for p in pos], common, height=0.4, label="common learning rate", alpha=0.6)
    right.set_yticks(list(pos), labels, fontsize=8)
    right.invert_yaxis()
    low = min(best + common)
    right.set_xlim(max(0.0, low - 5), 100)
    right.set(xlabel=f"{network} test accuracy (%)", title="training (section 6)")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    save_figure(fig, path)


def write_report(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    plot(results, out / "card.png")
    return [write_json(out / "results.json", results), write_text(out / "report.md", render_markdown(results)),
            out / "card.png"]


__all__ = ["render_markdown", "summary_rows", "write_report"]
