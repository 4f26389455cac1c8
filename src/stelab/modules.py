"""``QuantReLU``: a drop-in activation module that quantizes in the forward pass and uses an STE backward."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import quantizers
from . import ste as ste_registry
from .config import QuantConfig
from .errors import check_alpha
from .ops import _QuantizeLearned, check_input, fused_plan, quantize_fixed


class QuantReLU(nn.Module):
    """Quantized activation ``y = q(x)`` with STE backward ``dy/dx := mu'(x)``; see :mod:`stelab.ops`.

    ``QuantReLU(bits=2, ste="clipped_relu")`` is the staircase of Yin et al. (2019) at Lloyd's resolution.
    The resolution lives in ``self.alpha``: a non-persistent buffer when fixed (so the state dict keys are those of
    the float model it replaces), a parameter when learned (a float state dict still loads: alpha keeps its value).
    A fixed resolution is set by the config and used as given (:meth:`current_alpha`). With a piecewise-constant
    ``mu'`` the layer runs the fused operator ``stelab::quantize`` (:mod:`stelab.kernels`). ``check_nan`` rejects NaN
    inputs; the fused kernel finds them in its own pass, other paths at the cost of one reduction and a host sync.
    """

    def __init__(
        self,
        bits: int = 2,
        ste: str = "clipped_relu",
        forward: str = "staircase",
        alpha: float | None = None,
        learn_alpha: bool = False,
        alpha_rule: str = "mean",
        check_nan: bool = True,
        *,
        config: QuantConfig | None = None,
    ) -> None:
        super().__init__()
        if config is None:
            config = QuantConfig(bits, ste, forward, alpha, learn_alpha, alpha_rule, check_nan)
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
        self._plan = None if config.learn_alpha else fused_plan(config.forward, config.bits, self._value, self.ste)

    @property
    def bits(self) -> int:
        return self.config.bits

    def forward(self, x: Tensor) -> Tensor:
        if self.config.learn_alpha:
            check_input(x, self.config.check_nan)
            if not torch.compiler.is_compiling():  # training can push alpha through zero; say so, do not mirror
                check_alpha(float(self.alpha.detach()))
            return _QuantizeLearned.apply(x, self.alpha, self.quantizer.name, self.bits, self.ste,
                                          self.config.alpha_rule)
        check_input(x, check_nan=False)  # the op checks NaN in its own pass
        return quantize_fixed(x, self.quantizer.name, self.bits, self._value, self.ste, self.config.check_nan,
                              self._plan)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # A float model's state dict has no alpha: keep the initial resolution instead of failing strict loading.
        if prefix + "alpha" in missing_keys:
            missing_keys.remove(prefix + "alpha")

    def current_alpha(self) -> float:
        if self.config.learn_alpha:
            return float(self.alpha.detach())
        return self._value

    def extra_repr(self) -> str:
        c = self.config
        mode = f"learned[{c.alpha_rule}]" if c.learn_alpha else "fixed"
        return f"bits={c.bits}, forward={c.forward}, ste={self.ste.label}, alpha={self.current_alpha():.4g} ({mode})"
