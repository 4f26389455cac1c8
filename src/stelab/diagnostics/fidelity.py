r"""Gradient fidelity: how well does each STE's coarse gradient align with the true (smoothed) gradient?

For every batch :math:`b` we take, from **one** forward of the quantized network, the coarse gradient
:math:`g^{(e)}_b` of each STE :math:`e` (the backward is re-run with each STE's :math:`\mu'`; see
:func:`.smoothing.switchable_ste`), and the smoothed reference :math:`r^{(s)}_b` for each width :math:`s` (its own
forward, since :math:`q_s \ne q`). Per layer (the parameters a module owns) and for the whole model we report, over
:math:`B` i.i.d. batches,

* ``cosine``: :math:`\cos(\sum_b g_b, \sum_b r_b)`, the cosine between the mean coarse gradient and the mean reference
  gradient, i.e. the theory's :math:`\cos(\mathbb{E} g, \nabla f)` (Yin et al. 2019); 95% interval from the
  delete-one-batch jackknife standard error;
* ``cosine_unbiased``: the same ratio with each inner product :math:`\langle \mathbb{E}a, \mathbb{E}c\rangle` replaced
  by the U-statistic :math:`\sum_{b \ne b'} \langle a_b, c_{b'}\rangle / B(B-1)`, which removes the noise bias of
  the plug-in norms (NaN if a norm estimate is not positive);
* ``inner``: that U-statistic for :math:`\langle \mathbb{E} g, \mathbb{E} r\rangle` with its jackknife standard error
  (positive: the STE points downhill on average);
* ``coarse_sq_norm_unbiased`` / ``reference_sq_norm_unbiased``: the U-statistic for :math:`\|\mathbb{E} g\|^2`
  and :math:`\|\mathbb{E} r\|^2` (with jackknife s.e.): near a minimum the true gradient vanishes, and the
  question becomes whether the STE's mean coarse gradient vanishes too;
* ``batch_cosine``: mean over batches of :math:`\cos(g_b, r_b)` with a t interval (what one training step sees).

All of these are functions of the Gram matrix of the per-batch gradient vectors, which is all that is kept per layer;
the whole-model Gram is the sum of the per-layer ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy import stats as scipy_stats
from torch import Tensor, nn
from tqdm import tqdm

from .. import ste as ste_registry
from .reference import LossFn, default_loss, gradients, parameter_groups, preserved_state
from .smoothing import STESelector, require_quantized, smoothed, switchable_ste

DEFAULT_STES = ste_registry.PAPER_STES
DEFAULT_WIDTHS = (0.5, 0.25, 0.1)
MODEL = "model"


EXTRAPOLATED = "extrapolated(s->0)"


def reference_key(width: float) -> str:
    return f"smoothed(s={width:g}a)"


def extrapolate_to_zero(wide: Tensor, narrow: Tensor, s_wide: float, s_narrow: float) -> Tensor:
    r"""Linear (Richardson) extrapolation of the smoothed gradient to :math:`s = 0` from two widths.

    The smoothing bias of :math:`\nabla L_s` is :math:`O(s)` (measured on the two-layer model, where it is linear in
    :math:`s` to within noise), so :math:`(s_1 r_{s_2} - s_2 r_{s_1}) / (s_1 - s_2)` removes its first-order term at
    the price of a noisier estimate (e.g. :math:`2 r_{s/2} - r_s`)."""
    return (s_wide * narrow - s_narrow * wide) / (s_wide - s_narrow)


def resolve_stes(stes: Iterable[str]) -> list[ste_registry.STE]:
    """STE names to STEs; an unknown name raises listing the valid ones."""
    resolved = [ste_registry.get(s) for s in stes]
    if not resolved:
        raise ValueError(f"give at least one STE; valid names: {ste_registry.names()}")
    return resolved


def check_widths(widths: Iterable[float]) -> list[float]:
    out = [float(w) for w in widths]
    if not out or not all(math.isfinite(w) and w > 0 for w in out):
        raise ValueError(f"smoothing widths must be positive numbers (units of alpha), got {list(widths)}")
    return out


def batch_gradients(model: nn.Module, inputs: Tensor, targets: Tensor, stes: Sequence[str] = DEFAULT_STES,
                    widths: Sequence[float] = DEFAULT_WIDTHS, loss_fn: LossFn = default_loss,
                    seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """``{key: {layer: flat gradient}}`` for each STE label and each :func:`reference_key`, on one batch.

    The coarse gradients of all STEs share one forward; each width needs its own. Dropout masks are the same in every
    pass (one seed), and the model's buffers and the global RNG are restored afterwards.
    """
    require_quantized(model)
    estimators, widths = resolve_stes(stes), check_widths(widths)
    groups = parameter_groups(model)
    params = [p for group in groups.values() for _, p in group]
    sizes = [len(group) for group in groups.values()]
    out: dict[str, dict[str, Tensor]] = {}

    def by_layer(grads: list[Tensor]) -> dict[str, Tensor]:
        chunks, i = {}, 0
        for layer, n in zip(groups, sizes):
            chunks[layer] = torch.cat([g.detach().reshape(-1) for g in grads[i:i + n]])
            i += n
        return chunks

    selector = STESelector()
    with preserved_state(model):
        torch.manual_seed(seed)
        with switchable_ste(model, selector):
            loss = loss_fn(model(inputs), targets)
        for i, estimator in enumerate(estimators):
            selector.ste = estimator
            out[estimator.label] = by_layer(gradients(loss, params, retain_graph=i < len(estimators) - 1))
        del loss
        for width in widths:
            torch.manual_seed(seed)
            with smoothed(model, width):
                loss = loss_fn(model(inputs), targets)
            out[reference_key(width)] = by_layer(gradients(loss, params))
    return out


@dataclass
class FidelityResult:
    """Per (layer, STE, reference) statistics; ``rows`` is JSON-ready, see the module docstring for the columns."""

    stes: list[str]
    references: list[str]
    layers: list[str]
    n_batches: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    reference_agreement: list[dict[str, Any]] = field(default_factory=list)

    def get(self, ste: str, layer: str = MODEL, reference: str | None = None) -> dict[str, Any]:
        """The row for ``ste`` (a name or label) on ``layer`` against ``reference`` (default: the narrowest width)."""
        label = ste_registry.get(ste).label
        reference = reference or self.references[-1]
        for row in self.rows:
            if row["ste"] == label and row["layer"] == layer and row["reference"] == reference:
                return row
        raise KeyError(f"no row for ste={label!r}, layer={layer!r}, reference={reference!r}; stes: {self.stes}, "
                       f"layers: {self.layers}, references: {self.references}")

    def cosine(self, ste: str, layer: str = MODEL, reference: str | None = None) -> float:
        return self.get(ste, layer, reference)["cosine"]

    def to_dict(self) -> dict[str, Any]:
        return {"stes": self.stes, "references": self.references, "layers": self.layers,
                "n_batches": self.n_batches, "rows": self.rows, "reference_agreement": self.reference_agreement}


def gram_statistics(gram: Tensor, confidence: float = 0.95) -> dict[str, Tensor]:
    """Every statistic of the module docstring for all pairs of vector kinds, from the Gram tensor
    ``gram[b, a, b', c] = <v_{b,a}, v_{b',c}>`` (float64) of ``B`` batches and ``V`` kinds. Each output is ``[V, V]``
    (``[V]`` for norms)."""
    B, V = gram.shape[0], gram.shape[1]
    z = scipy_stats.norm.ppf(0.5 + confidence / 2)
    total = gram.sum(dim=(0, 2))  # <S_a, S_c>
    diag = torch.einsum("babc->bac", gram)  # <v_ba, v_bc>
    out: dict[str, Tensor] = {}
    norms = total.diagonal().clamp_min(0).sqrt()
    out["cosine"] = total / (norms[:, None] * norms[None, :])
    out["norm"] = norms / B
    nan = torch.full((V, V), float("nan"), dtype=gram.dtype)
    if B >= 2:
        rows = gram.sum(dim=2)  # [b, a, c] = <v_ba, S_c>
        loo = total[None] - rows - rows.transpose(1, 2) + diag  # <S_a - v_ba, S_c - v_bc>
        loo_norm = loo.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
        loo_cos = loo / (loo_norm[:, :, None] * loo_norm[:, None, :])
        out["cosine_se"] = _jackknife_se(loo_cos)
        diag_sum = diag.sum(0)
        # delete-one U-statistics: cross-batch sums over the remaining B - 1 batches
        u_stat = (loo - (diag_sum[None] - diag)) / ((B - 1) * (B - 2)) if B >= 3 else None
        inner = (total - diag_sum) / (B * (B - 1))
        out["inner"] = inner
        out["inner_se"] = _jackknife_se(u_stat) if u_stat is not None else nan
        d = inner.diagonal()
        out["cosine_unbiased"] = torch.where((d[:, None] > 0) & (d[None, :] > 0),
                                             inner / (d[:, None].clamp_min(1e-300) * d[None, :].clamp_min(1e-300)
                                                      ).sqrt(), nan)
    else:
        out["cosine_se"] = out["inner_se"] = out["cosine_unbiased"] = nan
        out["inner"] = total
    dnorm = diag.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    batch_cos = diag / (dnorm[:, :, None] * dnorm[:, None, :])
    out["batch_cosine"] = batch_cos.nanmean(0)
    if B >= 2:
        t = scipy_stats.t.ppf(0.5 + confidence / 2, B - 1)
        out["batch_cosine_halfwidth"] = t * _nanstd(batch_cos) / math.sqrt(B)
    else:
        out["batch_cosine_halfwidth"] = nan
    out["z"] = torch.tensor(z, dtype=gram.dtype)
    return out


def _nanstd(x: Tensor) -> Tensor:
    mean = x.nanmean(0)
    n = (~torch.isnan(x)).sum(0)
    return (((x - mean) ** 2).nansum(0) / (n - 1).clamp_min(1)).sqrt()


def _jackknife_se(leave_one_out: Tensor) -> Tensor:
    """Jackknife standard error from the ``B`` delete-one estimates along dim 0."""
    B = leave_one_out.shape[0]
    centered = leave_one_out - leave_one_out.mean(0)
    return ((B - 1) / B * (centered**2).sum(0)).sqrt()


def _finite(x: Tensor | float) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _grams(per_layer: dict[str, list[Tensor]], n: int, kinds: int) -> dict[str, Tensor]:
    """Per layer (consumed from ``per_layer`` to free memory) and for the whole model: the float64 Gram matrix of
    every batch's gradients of every kind, shape ``[n, kinds, n, kinds]``."""
    grams = {}
    for layer in list(per_layer):
        flat = torch.stack(per_layer.pop(layer)).reshape(n * kinds, -1)  # [B*V, P] float32
        gram = torch.zeros(flat.shape[0], flat.shape[0], dtype=torch.float64)
        for start in range(0, flat.shape[1], 8192):  # float64 products, chunked to bound memory
            chunk = flat[:, start:start + 8192].to(torch.float64)
            gram += chunk @ chunk.T
        grams[layer] = gram.reshape(n, kinds, n, kinds)
    grams[MODEL] = sum(grams.values())
    return grams


def gradient_fidelity(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], stes: Sequence[str] = DEFAULT_STES,
                      widths: Sequence[float] = DEFAULT_WIDTHS, loss_fn: LossFn = default_loss, seed: int = 0,
                      confidence: float = 0.95, extrapolate: bool = True, progress: bool = False) -> FidelityResult:
    """Cosine and inner product of each STE's coarse gradient with the smoothed reference at each width, per layer
    and for the whole model, over ``batches`` (an iterable of ``(inputs, targets)``; use i.i.d. batches for the
    intervals to mean what they say). With two or more widths and ``extrapolate``, the reference extrapolated to
    ``s = 0`` from the two narrowest (:func:`extrapolate_to_zero`) is added, and it is the default reference of
    :meth:`FidelityResult.get`; otherwise the narrowest width is."""
    estimators, widths = resolve_stes(stes), sorted(set(check_widths(widths)), reverse=True)
    labels = [e.label for e in estimators]
    refs = [reference_key(w) for w in widths]
    extrapolate = extrapolate and len(widths) >= 2
    kinds = labels + refs + ([EXTRAPOLATED] if extrapolate else [])
    per_layer: dict[str, list[Tensor]] = {}
    n = 0
    for i, (inputs, targets) in enumerate(tqdm(batches, desc="gradient fidelity", disable=not progress)):
        grads = batch_gradients(model, inputs, targets, labels, widths, loss_fn, seed + i)
        if extrapolate:
            wide, narrow = widths[-2], widths[-1]
            grads[EXTRAPOLATED] = {layer: extrapolate_to_zero(g, grads[refs[-1]][layer], wide, narrow)
                                   for layer, g in grads[refs[-2]].items()}
        for layer in grads[kinds[0]]:
            per_layer.setdefault(layer, []).append(
                torch.stack([grads[k][layer].to("cpu", torch.float32) for k in kinds]))
        n += 1
    if n == 0:
        raise ValueError("gradient_fidelity needs at least one batch")
    layers = list(per_layer)
    grams = _grams(per_layer, n, len(kinds))
    refs = kinds[len(labels):]
    result = FidelityResult(labels, refs, layers + [MODEL], n)
    for layer in result.layers:
        st = gram_statistics(grams[layer], confidence)
        z = float(st["z"])
        for a, label in enumerate(labels):
            for r, ref in enumerate(refs, start=len(labels)):
                cos, se = float(st["cosine"][a, r]), float(st["cosine_se"][a, r])
                result.rows.append({
                    "layer": layer, "ste": label, "reference": ref,
                    "cosine": _finite(st["cosine"][a, r]), "cosine_se": _finite(st["cosine_se"][a, r]),
                    "cosine_ci": [_finite(cos - z * se), _finite(cos + z * se)],
                    "cosine_unbiased": _finite(st["cosine_unbiased"][a, r]),
                    "inner": _finite(st["inner"][a, r]), "inner_se": _finite(st["inner_se"][a, r]),
                    "batch_cosine": _finite(st["batch_cosine"][a, r]),
                    "batch_cosine_halfwidth": _finite(st["batch_cosine_halfwidth"][a, r]),
                    "coarse_norm": _finite(st["norm"][a]), "reference_norm": _finite(st["norm"][r]),
                    "coarse_sq_norm_unbiased": _finite(st["inner"][a, a]),
                    "coarse_sq_norm_se": _finite(st["inner_se"][a, a]),
                    "reference_sq_norm_unbiased": _finite(st["inner"][r, r]),
                    "reference_sq_norm_se": _finite(st["inner_se"][r, r]),
                })
        last = len(kinds) - 1
        for r, ref in enumerate(refs, start=len(labels)):
            result.reference_agreement.append({"layer": layer, "reference": ref, "versus": refs[-1],
                                               "cosine": _finite(st["cosine"][r, last]),
                                               "cosine_se": _finite(st["cosine_se"][r, last])})
    return result


def zeroth_order_comparison(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]],
                            stes: Sequence[str] = DEFAULT_STES, widths: Sequence[float] = DEFAULT_WIDTHS,
                            sigma: float = 0.01, n_directions: int = 200, loss_fn: LossFn = default_loss,
                            seed: int = 0) -> list[dict[str, Any]]:
    """Independent check on ``batches``: along the unit direction of each STE's and each reference's mean gradient,
    the zeroth-order directional derivative of the *real* quantized loss (parameter-space smoothing ``sigma``, with
    s.e.) next to the autograd directional derivative of each smoothed reference. Positive: minus that direction
    decreases the loss. The two smoothings differ (parameters vs activations), so agreement is approximate."""
    from .reference import zeroth_order_check

    widths = sorted(check_widths(widths), reverse=True)
    labels = [e.label for e in resolve_stes(stes)]
    sums: dict[str, Tensor] = {}
    for i, (x, y) in enumerate(batches):
        grads = batch_gradients(model, x, y, labels, widths, loss_fn, seed + i)
        for key, per_layer in grads.items():
            flat = torch.cat(list(per_layer.values())).to("cpu", torch.float64)
            sums[key] = sums[key] + flat if key in sums else flat
    zo = zeroth_order_check(model, list(batches), sums, sigma, n_directions, loss_fn, seed)
    rows = []
    for key, d in sums.items():
        unit = d / d.norm()
        row = {"direction": key, "zeroth_order": zo[key]["estimate"], "zeroth_order_se": zo[key]["se"]}
        for w in widths:
            row[reference_key(w)] = float(sums[reference_key(w)] @ unit) / len(batches)
        rows.append(row)
    return rows
