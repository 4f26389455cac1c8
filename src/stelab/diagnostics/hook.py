"""``DiagnosticsHook``: gradient fidelity and saturation logged to ``metrics.jsonl`` during training, at bounded cost.

Every ``every`` optimizer steps the hook takes at most ``max_samples`` examples of the current batch and computes,
from one forward, each STE's coarse gradient and one smoothed reference (width ``width`` in units of alpha); and, on
a fixed probe batch (the first ``probe_samples`` examples it ever saw), the saturation fractions per layer and the
code-flip ratio since its previous call. Cost per call: one forward, a backward per STE, one smoothed
forward/backward and one probe forward; measured at 5.6-6.8 training steps of 2-bit LeNet-5 (batch 128), i.e.
about 6% at ``every=100`` (``benchmarks/diagnostics_overhead.py``). The hook leaves the training state alone:
``.grad``, BN running statistics and the global RNG are as they were.

A one-batch cosine is the ``batch_cosine`` of :mod:`.fidelity` (noisy: the reference of one batch is a rough
estimate); ``stelab diagnose`` computes the data-averaged version with intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .fidelity import DEFAULT_STES, MODEL, batch_gradients, check_widths, reference_key, resolve_stes
from .reference import default_loss
from .stats import flip_ratio, statistics_and_codes


def _cosine(a: Tensor, b: Tensor) -> float | None:
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else None


class DiagnosticsHook:
    """Training hook (see the hook contract of :func:`stelab.train.train`): returns ``{"diagnostics": {...}}``."""

    def __init__(self, every: int, stes: Sequence[str] = DEFAULT_STES, width: float = 0.25, max_samples: int = 128,
                 probe_samples: int = 128) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int (steps between diagnostics), got {every!r}")
        for name, value in (("max_samples", max_samples), ("probe_samples", probe_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.every = every
        self.stes = [s.label for s in resolve_stes(stes)]
        self.width = check_widths([width])[0]
        self.max_samples, self.probe_samples = max_samples, probe_samples
        self._probe: Tensor | None = None
        self._codes: dict[str, Tensor] | None = None

    def __call__(self, *, step: int, epoch: int, model: nn.Module, inputs: Tensor, targets: Tensor,
                 loss_fn=None) -> dict:
        loss_fn = loss_fn or default_loss
        x, y = inputs[: self.max_samples], targets[: self.max_samples]
        grads = batch_gradients(model, x, y, self.stes, [self.width], loss_fn, seed=step)
        ref = grads[reference_key(self.width)]
        cosine, inner = {}, {}
        ref_all = torch.cat(list(ref.values()))
        for label in self.stes:
            per_layer = {layer: _cosine(g, ref[layer]) for layer, g in grads[label].items()}
            coarse_all = torch.cat(list(grads[label].values()))
            per_layer[MODEL] = _cosine(coarse_all, ref_all)
            cosine[label] = per_layer
            inner[label] = float(coarse_all @ ref_all)
        if self._probe is None:
            self._probe = inputs[: self.probe_samples].detach().clone()
        stats, codes = statistics_and_codes(model, self._probe, saturation_only=True)
        saturation = {name: {k: s[k] for k in ("below", "inside", "above")} for name, s in stats.items()}
        flips = flip_ratio(self._codes, codes) if self._codes is not None else None
        self._codes = codes
        return {"diagnostics": {"width": self.width, "samples": int(x.shape[0]), "cosine": cosine, "inner": inner,
                                "reference_norm": float(ref_all.norm()), "saturation": saturation, "flip": flips}}
