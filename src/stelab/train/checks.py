"""The checks of :class:`stelab.train.config.TrainConfig` that span fields (weights and their optimizer, packing,
STE schedules, distillation), each raising with the flag to change. ``self`` is the config being built."""

from __future__ import annotations

from typing import Any

from ..errors import check_choice
from ..weights import WeightQuantConfig
from .sections import OPTIMIZERS, _flag


def ste_schedule(self: Any) -> None:
    """Each ``PARAM=START:END[:SHAPE]`` names a parameter of the activations' STE
    (:mod:`stelab.activations.schedule`)."""
    if isinstance(self.ste_schedule, str):
        raise TypeError(f"ste_schedule is a list of PARAM=START:END[:SHAPE], got the string {self.ste_schedule!r}")
    object.__setattr__(self, "ste_schedule", tuple(str(s) for s in self.ste_schedule))
    if not self.ste_schedule:
        return
    from ..activations import schedule as ste_schedule

    if self.quant is None:
        raise ValueError("ste_schedule (--ste-schedule) schedules a parameter of the activations' STE, but the "
                         "activations are float (--float); drop --ste-schedule or quantize the activations")
    ste_schedule.check(self.quant.ste, ste_schedule.parse_all(self.ste_schedule))


def placement(self: Any) -> None:
    """``act_placement`` is one the model offers and fits the activations (:func:`stelab.models.check_placement`);
    a placement other than relu needs quantized activations, since the float networks of all placements are one."""
    from .. import models

    models.check_placement(self.model, self.act_placement, self.quant)
    if self.act_placement != "relu" and self.quant is None:
        raise ValueError(f"act_placement {self.act_placement!r} (--act-placement) says where activations are "
                         "quantized, but they are float (--float), and the float networks of every placement are the "
                         "same; drop --act-placement or quantize the activations")


def pack_saved(self: Any) -> None:
    """``pack_saved`` needs quantized activations and eager autograd (:mod:`stelab.pack`)."""
    for name in ("pack_saved", "recompute"):
        if not isinstance(getattr(self, name), bool):
            raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
    from ..pack.context import check_limit

    check_limit(self.recompute_limit)
    if self.recompute_limit is not None and not self.recompute:
        raise ValueError("recompute_limit (--recompute-limit) chooses which convolutions --recompute recomputes; "
                         "add --recompute (or drop --recompute-limit)")
    if self.recompute and not self.pack_saved:
        raise ValueError("recompute (--recompute) is a mode of pack_saved: it recomputes the convolutions' "
                         "outputs inside the same saved-tensor hooks; add --pack-saved (or drop --recompute)")
    if self.pack_saved and self.quant is None:
        raise ValueError("pack_saved (--pack-saved) keeps quantized activations' outputs as codes, but the "
                         "activations are float (--float); drop --pack-saved or quantize the activations")
    if self.pack_saved and self.compile:
        from ..pack import COMPILE_MESSAGE

        raise ValueError(COMPILE_MESSAGE)


def learned_steps(self: Any) -> None:
    """``step_lr_scale`` / ``step_weight_decay`` set the optimizer of learned steps, so the run must have some:
    learned activation resolutions or LSQ weight steps."""
    if not (0.0 <= self.step_lr_scale < float("inf")):
        raise ValueError(f"step_lr_scale must be a finite number >= 0, got {self.step_lr_scale}"
                         + _flag("step_lr_scale"))
    if self.step_weight_decay is not None and not (0.0 <= self.step_weight_decay < float("inf")):
        raise ValueError(f"step_weight_decay must be a finite number >= 0, got {self.step_weight_decay}"
                         + _flag("step_weight_decay"))
    if self.step_lr_scale == 1.0 and self.step_weight_decay is None:
        return
    learned = (self.quant is not None and self.quant.learn_alpha) or (
        self.weights is not None and self.weights.learned)
    if not learned:
        raise ValueError("step_lr_scale / step_weight_decay (--step-lr-scale, --step-weight-decay) set how learned "
                         "steps train, but this run learns none; add --learn-alpha or --weight-scale-rule lsq, or "
                         "drop them")


def weights(self: Any) -> None:
    if isinstance(self.weights, dict):  # nested, as in config.json
        object.__setattr__(self, "weights", WeightQuantConfig.from_dict(self.weights))
    if self.weights is not None and not isinstance(self.weights, WeightQuantConfig):
        raise TypeError(f"weights must be a stelab.weights.WeightQuantConfig or None (float weights), got "
                        f"{self.weights!r}")
    check_choice("optimizer", self.optimizer, OPTIMIZERS)
    if self.weights is None and self.optimizer != "sgd":
        raise ValueError(f"optimizer {self.optimizer!r} moves quantized weights, but the weights are float; "
                         "quantize them (--weight-bits B, or TrainConfig(weights=WeightQuantConfig(...))) or use "
                         "optimizer 'sgd'")
    if self.weights is None and self.weight_first_last:
        raise ValueError("weight_first_last (--weight-first-last) quantizes the first and last layers' weights, "
                         "but the weights are float; give --weight-bits B too")
    if not (0.0 <= self.bcgd_rho <= 1.0):
        raise ValueError(f"bcgd_rho must be in [0, 1], got {self.bcgd_rho}" + _flag("bcgd_rho"))
    if not (0.0 <= self.relax_lam < float("inf")):
        raise ValueError(f"relax_lam must be a finite number >= 0, got {self.relax_lam}" + _flag("relax_lam"))
    if not (1.0 <= self.relax_growth < float("inf")):
        raise ValueError(f"relax_growth must be a finite number >= 1 (lambda must not shrink), got "
                         f"{self.relax_growth}" + _flag("relax_growth"))
    if not self.distill_temperature > 0 or not 0.0 <= self.distill_weight <= 1.0:
        raise ValueError(f"distillation needs distill_temperature > 0 and distill_weight in [0, 1], got "
                         f"{self.distill_temperature} and {self.distill_weight}")
    fields = type(self).__dataclass_fields__
    if self.distill is None and any(getattr(self, f) != fields[f].default for f in ("distill_temperature",
                                                                                   "distill_weight")):
        raise ValueError("distill_temperature / distill_weight (--distill-temperature, --distill-weight) set the "
                         "distillation, but there is no teacher; give --distill TEACHER too, or drop them")
    if not (0.0 < self.relax_hard_at <= 1.0):
        raise ValueError(f"relax_hard_at is the fraction of the run where BinaryRelax turns hard, in (0, 1] "
                         f"(1: never during the run), got {self.relax_hard_at}" + _flag("relax_hard_at"))
