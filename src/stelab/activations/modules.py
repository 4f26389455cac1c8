"""``QuantReLU``: a drop-in activation module that quantizes in the forward pass and uses an STE backward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import ste as ste_registry
from . import quantizers
from .config import QuantConfig
from .ops import fused_plan, quantize_with


class QuantReLU(nn.Module):
    """Quantized activation ``y = q(x)`` with STE backward ``dy/dx := mu'(x)``; see :mod:`stelab.activations.ops`.

    ``QuantReLU(config=None, **fields)``: the :class:`QuantConfig` ``config`` (default ``QuantConfig()``) with
    ``fields`` (its fields, by keyword) replaced, so ``QuantReLU(bits=2, ste="relu")`` and
    ``QuantReLU(config=cfg, bits=4)`` both work and an unknown field raises ``ValueError`` listing the valid ones.
    ``QuantReLU()`` is the staircase of Yin et al. (2019) at Lloyd's resolution with the default STE
    (:data:`stelab.ste.DEFAULT_STE`).
    The resolution lives in ``self.alpha``: a non-persistent buffer when fixed (so the state dict keys are those of
    the float model it replaces), a parameter when learned (a float state dict still loads: alpha keeps its value).
    A fixed resolution is set by the config and used as given (:meth:`current_alpha`). With a piecewise-constant
    ``mu'`` the layer runs the fused operator ``stelab::quantize`` (:mod:`stelab.kernels`). ``check_nan`` rejects NaN
    inputs; the fused kernel finds them in its own pass, other paths at the cost of one reduction and a host sync.
    """

    #: :class:`stelab.PackSaved` packs what such a module's op saves (it looks for this flag).
    packs_saved_output = True
    #: A learned resolution started from data rather than Lloyd's (:mod:`stelab.activations.calibrate`); models
    #: set it on quantizers of unstandardised inputs.
    init_from_data = False
    #: Whether a state dict gave this layer its resolution (then no start from data replaces it).
    alpha_loaded = False

    def __init__(self, config: QuantConfig | None = None, **fields: Any) -> None:
        super().__init__()
        config = QuantConfig.merged(config, **fields)
        self.config = config
        self.quantizer = quantizers.get(config.forward)
        self.ste = ste_registry.get(config.ste)
        value = self.quantizer.resolution(config.bits, self.quantizer.default_alpha(config.bits)
                                          if config.alpha is None else config.alpha)
        if config.learn_alpha:
            self.alpha = nn.Parameter(torch.tensor(value, dtype=torch.float32))
        else:
            self.register_buffer("alpha", torch.tensor(value, dtype=torch.float32), persistent=False)
        self._value = float(value)
        # Built once here rather than per call: the fused op's constant arguments depend only on the config.
        self._plan = None if config.learn_alpha else fused_plan(config.forward, config.bits, self._value, self.ste)

    def set_ste(self, ste: str | ste_registry.STE) -> None:
        """Use ``ste`` (a spec or an STE) from the next forward on, e.g. a scheduled parameter
        (:mod:`stelab.activations.schedule`); the config keeps the STE the layer was built with."""
        self.ste = ste_registry.get(ste)
        self._plan = None if self.config.learn_alpha else fused_plan(self.config.forward, self.config.bits,
                                                                     self._value, self.ste)

    @property
    def bits(self) -> int:
        return self.config.bits

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha if self.config.learn_alpha else self._value
        return quantize_with(x, self.config, alpha, self.ste, self._plan)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # A float model's state dict has no alpha: keep the initial resolution instead of failing strict loading.
        if prefix + "alpha" in missing_keys:
            missing_keys.remove(prefix + "alpha")
        elif prefix + "alpha" in state_dict and self.config.learn_alpha:
            self.alpha_loaded = True

    def current_alpha(self) -> float:
        if self.config.learn_alpha:
            return float(self.alpha.detach())
        return self._value

    def extra_repr(self) -> str:
        c = self.config
        mode = f"learned[{c.alpha_rule}]" if c.learn_alpha else "fixed"
        return f"bits={c.bits}, forward={c.forward}, ste={self.ste.label}, alpha={self.current_alpha():.4g} ({mode})"
