r"""Activation statistics of quantized layers: where the pre-activations sit relative to the staircase.

For a layer with top level :math:`T = L\alpha` the pre-activations split into ``below`` (:math:`x \le 0`, where
relu and clipped relu STEs pass no gradient), ``inside`` (:math:`0 < x \le T`) and ``above`` (:math:`x > T`, where
the clipped relu passes none but relu and identity do): the saturation that separates the three STEs. The *code* of a
pre-activation is the index of the level it is quantized to; the code-flip ratio between two parameter states on the
same inputs is the fraction of activations whose code differs (how much the quantized network actually changed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..activations.modules import QuantReLU
from .reference import preserved_state
from .smoothing import module_tables, require_quantized

HISTOGRAM_BINS = 60


@contextmanager
def recorded_inputs(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Within the block, forwards of ``model`` record each quantized activation's (detached) input by layer name."""
    record: dict[str, Tensor] = {}

    def hook(name: str):
        return lambda mod, args: record.__setitem__(name, args[0].detach())

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in require_quantized(model)]
    try:
        yield record
    finally:
        for h in handles:
            h.remove()


def codes_of(x: Tensor, module: QuantReLU) -> Tensor:
    """Level index (``uint8``) each element of ``x`` is quantized to."""
    thresholds, _, _, _ = module_tables(module, x.dtype)
    return torch.bucketize(x, thresholds.to(x.device), right=False).to(torch.uint8)


def _layer_stats(x: Tensor, module: QuantReLU) -> dict:
    thresholds, levels, top, alpha = module_tables(module, torch.float64)
    x = x.reshape(-1).to(torch.float64)
    n = x.numel()
    below = float((x <= 0).sum()) / n
    above = float((x > top).sum()) / n
    code_counts = torch.bincount(codes_of(x, module).long(), minlength=len(levels)).to(torch.float64) / n
    edges = torch.linspace(-top, 2 * top, HISTOGRAM_BINS + 1, dtype=torch.float64)
    hist = torch.histc(x.clamp(-top, 2 * top), bins=HISTOGRAM_BINS, min=-top, max=2 * top) / n
    return {
        "below": below, "inside": 1.0 - below - above, "above": above,
        "mean": float(x.mean()), "std": float(x.std()) if n > 1 else 0.0,
        "alpha": alpha, "top": top, "levels": levels.tolist(), "thresholds": thresholds.tolist(),
        "level_fractions": code_counts.tolist(),
        "histogram": {"edges": edges.tolist(), "fractions": hist.tolist(), "clipped_to_range": True},
    }


def activation_statistics(model: nn.Module, inputs: Tensor) -> dict[str, dict]:
    """Per quantized layer: fractions ``below``/``inside``/``above``, mean/std of the pre-activations, the fraction
    at each level, and a histogram over ``[-top, 2 top]`` (values outside are counted in the end bins)."""
    return statistics_and_codes(model, inputs)[0]


def statistics_and_codes(model: nn.Module, inputs: Tensor, saturation_only: bool = False
                         ) -> tuple[dict[str, dict], dict[str, Tensor]]:
    """:func:`activation_statistics` and :func:`activation_codes` from one forward; ``saturation_only`` computes
    just the ``below``/``inside``/``above`` fractions (what the training hook logs)."""
    modules = dict(require_quantized(model))
    with preserved_state(model), torch.no_grad(), recorded_inputs(model) as record:
        model(inputs)
    names = [name for name in modules if name in record]
    codes = {n: codes_of(record[n], modules[n]) for n in names}
    if not saturation_only:
        return {n: _layer_stats(record[n], modules[n]) for n in names}, codes
    stats = {}
    for n in names:
        _, _, top, _ = module_tables(modules[n], record[n].dtype)
        total = record[n].numel()
        below = float((record[n] <= 0).sum()) / total
        above = float((record[n] > top).sum()) / total
        stats[n] = {"below": below, "inside": 1.0 - below - above, "above": above}
    return stats, codes


def activation_codes(model: nn.Module, inputs: Tensor, state: Mapping[str, Tensor] | None = None
                     ) -> dict[str, Tensor]:
    """Each quantized layer's codes on ``inputs``, with the model's parameters/buffers or those in ``state``."""
    modules = dict(require_quantized(model))
    with preserved_state(model), torch.no_grad(), recorded_inputs(model) as record:
        if state is None:
            model(inputs)
        else:
            functional_call(model, dict(state), (inputs,), strict=False)
    return {name: codes_of(record[name], modules[name]) for name in modules if name in record}


def flip_ratio(codes_a: Mapping[str, Tensor], codes_b: Mapping[str, Tensor]) -> dict[str, float]:
    """Fraction of activations whose code differs, per layer and over all layers (key ``"model"``)."""
    if set(codes_a) != set(codes_b):
        raise ValueError(f"code sets cover different layers: {sorted(codes_a)} vs {sorted(codes_b)}")
    out, flipped, total = {}, 0, 0
    for name, a in codes_a.items():
        b = codes_b[name]
        if a.shape != b.shape:
            raise ValueError(f"layer {name!r}: codes of shape {tuple(a.shape)} vs {tuple(b.shape)} (same inputs?)")
        k = int((a != b).sum())
        out[name] = k / max(a.numel(), 1)
        flipped, total = flipped + k, total + a.numel()
    out["model"] = flipped / max(total, 1)
    return out


def code_flip_ratio(model: nn.Module, inputs: Tensor, state_a: Mapping[str, Tensor],
                    state_b: Mapping[str, Tensor]) -> dict[str, float]:
    """Code-flip ratio on ``inputs`` between two parameter states (state dicts) of ``model``."""
    return flip_ratio(activation_codes(model, inputs, state_a), activation_codes(model, inputs, state_b))
