"""Is one STE better than another? A paired comparison over seeds, instead of an assertion.

Within one seed, every quantized cell starts from the same float network and sees the same data order, so the
seed-to-seed variation is shared by the cells of a seed. For two STEs ``a`` and ``b`` at one bit width the
per-seed differences ``d_s = acc_b(s) - acc_a(s)`` remove it, and the question "is ``b`` better than ``a``?"
becomes a one-sample test on the ``d_s``:

- the paired t statistic ``t = mean(d) / (sd(d) / sqrt(n))`` with ``n - 1`` degrees of freedom, and its two-sided
  p value (a normal-errors model; with 3 seeds it needs a large, consistent difference to reach p < 0.05);
- the sign count: in how many seeds ``b`` beat ``a``. Distribution-free, but with ``n`` seeds its smallest
  two-sided p value is ``2 / 2**n`` (0.25 for 3 seeds), so it can show consistency, never significance.

Which test and which reading are ours; the paper reports one number per cell and no spread.
"""

from __future__ import annotations

import math
import statistics
from itertools import combinations
from typing import Any

from ...io import markdown_table
from ..shape import finding
from .paper import paper_cell


def paired_difference(diffs: list[float]) -> dict[str, Any]:
    """Mean, standard deviation, t statistic and two-sided p value of paired differences, and the sign count.

    ``t`` and ``p`` are None for fewer than 2 differences; with every difference equal (sd 0) ``t`` is infinite
    and ``p`` is 0 unless the mean is 0 too (then ``t`` is 0 and ``p`` 1)."""
    from scipy import stats

    n = len(diffs)
    out: dict[str, Any] = {"n": n, "mean": statistics.fmean(diffs) if n else None,
                           "sd": statistics.stdev(diffs) if n > 1 else None,
                           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "t": None, "p": None}
    if n < 2:
        return out
    mean, sd = out["mean"], out["sd"]
    if sd == 0:
        out["t"], out["p"] = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / (sd / math.sqrt(n))
        out["t"], out["p"] = t, float(2 * stats.t.sf(abs(t), n - 1))
    return out


def ste_ordering(runs: list[dict[str, Any]], models, bits, stes, paper: bool = True) -> list[dict[str, Any]]:
    """For every model, bit width and pair of STEs (in ``stes`` order, ``a`` before ``b``): the paired comparison
    of ``b``'s test accuracy (%) minus ``a``'s over the seeds where both finished, with the paper's difference."""
    out = []
    for model in models:
        for b in bits:
            acc = {(r["ste"], r["seed"]): 100 * r["test_acc"] for r in runs
                   if r.get("model") == model and r.get("bits") == b and r.get("status") == "finished"
                   and isinstance(r.get("test_acc"), float)}
            for first, second in combinations(stes, 2):
                seeds = sorted(s for (ste, s) in acc if ste == first and (second, s) in acc)
                entry = {"model": model, "bits": b, "a": first, "b": second, "seeds": seeds,
                         **paired_difference([acc[second, s] - acc[first, s] for s in seeds])}
                pa, pb = (paper_cell(model, b, s) if paper else None for s in (first, second))
                entry["paper_diff"] = pb[1] - pa[1] if pa and pb else None
                out.append(entry)
    return out


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None else f"{v:{fmt}}"


def ordering_markdown(entries: list[dict[str, Any]]) -> str:
    """The paired comparisons with at least two seeds, as a Markdown section ("" when there are none)."""
    rows = [[e["model"], e["bits"], f"{e['b']} - {e['a']}", _num(e["paper_diff"], "+.2f"),
             f"{e['mean']:+.2f} ± {e['sd']:.2f}", f"{e['wins']}/{e['n']}", _num(e["t"], ".2f"), _num(e["p"], ".3f")]
            for e in entries if e["n"] >= 2]
    if not rows:
        return ""
    return ("## STE ordering, paired over seeds\n\nPer seed, the test-accuracy difference (points) of the second "
            "STE minus the first, both fine-tuned from that seed's float network: mean ± sd over seeds, in how many "
            "seeds the second won, the paired t statistic and its two-sided p value (n - 1 degrees of freedom). "
            "With n seeds the sign count alone can never be significant (smallest two-sided p = 2/2^n).\n\n"
            + markdown_table(["model", "bits", "difference", "paper", "ours (mean ± sd)", "wins", "t", "p"], rows))


def ordering_findings(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finding per compared pair: ``b`` minus ``a`` in test accuracy (points, mean over the paired seeds); where
    the paper has both cells, whether the sign agrees with the paper's (held), else a measurement."""
    out = []
    for e in entries:
        if e["mean"] is None:
            continue
        paper = e["paper_diff"]
        held = None if paper is None or paper == 0 or e["mean"] == 0 else (e["mean"] > 0) == (paper > 0)
        text = (f"{e['model']} {e['bits']}-bit: {e['b']} - {e['a']} = {e['mean']:+.2f} points over {e['n']} seed(s)"
                + ("" if paper is None else f" (paper {paper:+.2f})"))
        evidence = f"{e['wins']} wins, {e['losses']} losses"
        evidence += "" if e["p"] is None else f", paired t p = {e['p']:.3g}"
        out.append(finding(f"{e['model']}:{e['bits']}:{e['a']}<{e['b']}", text, held, evidence))
    return out
