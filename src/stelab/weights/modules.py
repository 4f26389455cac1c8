"""``QuantLinear`` and ``QuantConv2d``: drop-ins for ``nn.Linear``/``nn.Conv2d`` whose forward uses quantized weights.

The module holds the float ("latent") weights as ``weight``, exactly as the float layer does, and computes with
:math:`Q(w)` (:func:`stelab.weights.quantize_weight`); the optimizer moves the latent weights with the STE's
coarse gradient. The state dict has the float layer's keys (``weight``, ``bias``), plus ``weight_scale`` when the
scale is learned (rule ``lsq``): a float state dict still loads (strictly), and the step is then re-initialized from
the loaded weights, since a step fitted to other weights would be wrong for them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import WeightQuantConfig, check_weight_ste
from .ops import quantize_weight_with, relaxed_weight
from .quantizers import get


class _QuantWeights:
    """What both layers share: the config, the learned step, and the weights the forward uses."""

    weight: nn.Parameter
    weight_scale: nn.Parameter | None
    #: The layer's qualified name in its model, for error messages (set by :func:`stelab.weights.quantize_weights`;
    #: the class name for a layer built by hand).
    layer_name: str = ""

    def _init_quant(self, config: WeightQuantConfig | None, fields: dict[str, Any]) -> None:
        cfg = WeightQuantConfig.merged(config, **fields)
        self.weight_config = cfg
        self.weight_quantizer = get(cfg.quantizer)
        self.weight_ste = check_weight_ste(cfg.ste)
        # BinaryRelax's lambda and 1 + lambda as 0-d buffers (non-persistent: the state dict keys stay the float
        # layer's), read by the forward instead of a Python float: torch.compile would guard on the float's value and
        # recompile every step as lambda grows; it guards on the flag _relaxed only.
        w = self.weight
        self.register_buffer("_relax_lam", torch.zeros((), dtype=w.dtype, device=w.device),  # type: ignore
                             persistent=False)
        self.register_buffer("_relax_den", torch.ones((), dtype=w.dtype, device=w.device),  # type: ignore
                             persistent=False)
        self._relax: float | None = None
        self._relaxed = False
        if cfg.learned:
            self.weight_scale = nn.Parameter(self._initial_step())
        else:
            self.register_parameter("weight_scale", None)  # type: ignore[attr-defined]

    def _initial_step(self) -> Tensor:
        cfg, w = self.weight_config, self.weight.detach()
        shape = (w.shape[0],) if cfg.granularity == "channel" else ()
        if cfg.scale is not None:
            return torch.full(shape, cfg.scale, dtype=w.dtype, device=w.device)
        value = self.weight_quantizer.data_scale(w, cfg.effective_bits, cfg.granularity, "lsq")
        return value.reshape(shape).clone()

    @property
    def bits(self) -> int:
        return self.weight_config.effective_bits

    @property
    def relax(self) -> float | None:
        """BinaryRelax's :math:`\\lambda` (:class:`stelab.weights.optim.BinaryRelax` sets it); None: the hard
        :math:`Q(w)`."""
        return self._relax

    @relax.setter
    def relax(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if not value >= 0:
                raise ValueError(f"the relaxation parameter lambda must be >= 0, got {value}")
            # fill_ with a Python number: no host-device copy; each rounded once from float64, as a scalar would be
            self._relax_lam.fill_(value)
            self._relax_den.fill_(1.0 + value)
        self._relax, self._relaxed = value, value is not None

    def quantized_weight(self) -> Tensor:
        """The weights the forward uses: :math:`Q(w)` with the STE backward, or BinaryRelax's relaxed weights."""
        if self._relaxed:
            return relaxed_weight(self.weight, self.project(), self._relax_lam, self._relax_den)
        return quantize_weight_with(self.weight, self.weight_config, self.weight_ste, self.weight_scale,
                                    self.layer_name)

    @torch.no_grad()
    def project(self) -> Tensor:
        """:math:`Q(w)` of the current latent weights, without gradient (what BCGD and BinaryRelax blend with)."""
        return quantize_weight_with(self.weight, self.weight_config, self.weight_ste, self.weight_scale,
                                    self.layer_name)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,  # type: ignore[misc]
                                      missing_keys, unexpected_keys, error_msgs)
        if self.weight_scale is not None and prefix + "weight_scale" in missing_keys:
            missing_keys.remove(prefix + "weight_scale")
            with torch.no_grad():
                self.weight_scale.copy_(self._initial_step())

    def _quant_repr(self) -> str:
        c = self.weight_config
        return (f"weights: {c.quantizer} {c.effective_bits}-bit per {c.granularity}, scale {c.rule}, "
                f"ste={self.weight_ste.label}")


class QuantLinear(_QuantWeights, nn.Linear):
    """``nn.Linear`` computing with quantized weights: ``y = x Q(W)^T + b`` (the bias stays float).

    ``QuantLinear(in_features, out_features, bias=True, *, config=None, **fields)``: ``fields`` are
    :class:`WeightQuantConfig` fields replacing those of ``config``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 config: WeightQuantConfig | None = None, **fields: Any) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_quant(config, fields)

    @classmethod
    def from_float(cls, module: nn.Linear, config: WeightQuantConfig | None = None, **fields: Any) -> QuantLinear:
        """A QuantLinear with ``module``'s weights and bias (copied), on its device and dtype."""
        w = module.weight
        out = cls(module.in_features, module.out_features, module.bias is not None, device=w.device, dtype=w.dtype,
                  config=config, **fields)
        out.load_state_dict(module.state_dict())
        return out

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._quant_repr()}"


class QuantConv2d(_QuantWeights, nn.Conv2d):
    """``nn.Conv2d`` computing with quantized weights (per-channel scales are per output channel, dim 0).

    Same arguments as ``nn.Conv2d``, plus ``config=None, **fields`` (:class:`WeightQuantConfig`).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 config: WeightQuantConfig | None = None, **fields: Any) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode, device=device, dtype=dtype)
        self._init_quant(config, fields)

    @classmethod
    def from_float(cls, module: nn.Conv2d, config: WeightQuantConfig | None = None, **fields: Any) -> QuantConv2d:
        """A QuantConv2d with ``module``'s geometry, weights and bias (copied), on its device and dtype."""
        w = module.weight
        out = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                  module.dilation, module.groups, module.bias is not None, module.padding_mode, device=w.device,
                  dtype=w.dtype, config=config, **fields)
        out.load_state_dict(module.state_dict())
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Conv2d.extra_repr(self)}, {self._quant_repr()}"


WEIGHT_QUANT_TYPES: tuple[type[nn.Module], ...] = (QuantLinear, QuantConv2d)
