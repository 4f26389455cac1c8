r"""A start from a network quantized at other widths: progressive initialisation (W4A4, then W3A3, then W2A2).

A learned step fitted at :math:`b` bits does not suit :math:`b'` bits: the top level is :math:`Q_P s`, so a 4-bit
weight step (:math:`Q_P = 7`) loaded into a 2-bit layer (:math:`Q_P = 1`) clips every weight beyond
:math:`s`, a seventh of the range it was fitted to. So when ``init`` was trained at other widths, its learned
steps are re-fitted once, after loading:

* **weight steps** (``weight_scale``, LSQ): LSQ's initial step from the *loaded* weights,
  :math:`s = 2\langle|w|\rangle/\sqrt{Q_P}` per channel or tensor, the rule a float start uses;
* **learned activation resolutions** (``alpha``): scaled by :math:`\sqrt{Q_P / Q_P'}`
  (:math:`Q_P = 2^b - 1` levels above zero), the ratio of LSQ's initial steps
  :math:`2\langle|x|\rangle/\sqrt{Q_P}` at the two widths on the same inputs (the inputs are not at hand when the
  model is built, so the ratio replaces the data).

Both rules are ours (LSQ's paper gives the initial step; carrying a trained one across widths is our choice). On
the committed ResNet-20 W4A4 network loaded as W2A2, before any training, with batch-norm statistics re-estimated
on 2,048 training images, the first 1,000 CIFAR-10 test images score 43 % with re-fitted steps against 15 % with
the 4-bit steps kept (our measurement; what it buys after training is in REPRODUCTION.md).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io import read_json
from .config import TrainConfig


def init_config(init: str | Path, blob: dict[str, Any]) -> TrainConfig | None:
    """The config ``init`` was trained with: its checkpoint's, or the ``config.json`` of its run folder (or of the
    folder holding the checkpoint file); None when neither says or it cannot be read."""
    saved = blob.get("config")
    path = Path(init)
    if not isinstance(saved, dict):
        found = [f / "config.json" for f in (path if path.is_dir() else path.parent,) if (f / "config.json").is_file()]
        saved = read_json(found[0]) if found else None
    try:
        return TrainConfig.from_dict(saved) if isinstance(saved, dict) else None
    except (ValueError, KeyError, TypeError):  # a config this version cannot read (an unknown STE): widths unknown
        return None


def _act_bits(config: TrainConfig) -> int | None:
    return None if config.quant is None else config.quant.bits


def _weight_bits(config: TrainConfig) -> int | None:
    return None if config.weights is None else config.weights.effective_bits


@torch.no_grad()
def refit_steps(model: nn.Module, source: TrainConfig, init: str | Path, state: dict[str, Any]) -> None:
    """Re-fit the learned steps ``model`` just loaded from ``init`` (its ``state``, trained as ``source``) to the
    model's own widths; nothing when the widths are the same or ``state`` held no such step. Says on stderr what it
    changed."""
    from ..activations.modules import QuantReLU
    from ..weights.modules import WEIGHT_QUANT_TYPES

    done = []
    keys = {k.rsplit(".", 1)[-1] for k in state}
    old = _act_bits(source)
    acts = [m for m in model.modules() if isinstance(m, QuantReLU) and m.config.learn_alpha]
    if old is not None and "alpha" in keys and acts and acts[0].config.bits != old:
        new = acts[0].config.bits
        for m in acts:
            ratio = math.sqrt((len(m.quantizer.levels(old, 1.0)) - 1) / (len(m.quantizer.levels(new, 1.0)) - 1))
            m.alpha.mul_(ratio)
        done.append(f"activation resolutions ({len(acts)}) scaled by sqrt(Q_P {old}-bit / Q_P {new}-bit) = "
                    f"{ratio:.3g}")
    old = _weight_bits(source)
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_QUANT_TYPES) and m.weight_scale is not None]
    # another grid at the same width (uniform -> midrise) needs another step too
    if old is not None and "weight_scale" in keys and layers and (
            layers[0].bits != old or layers[0].weight_quantizer.name != source.weights.quantizer):
        for m in layers:
            m.weight_scale.copy_(m._initial_step())
        done.append(f"weight steps ({len(layers)} layers) re-fitted by the lsq rule's initial step to the loaded "
                    f"weights at {layers[0].bits} bits ({layers[0].weight_quantizer.name})")
    if done:
        print(f"stelab train: {init} was trained at other widths or with another weight quantizer; its "
              + "; ".join(done), file=sys.stderr)


def refit_unknown(model: nn.Module, init: str | Path) -> None:
    """Say on stderr that ``init``'s widths are unknown (no config that this version can read), so learned steps it
    holds are kept as they are, fitted or not to the model's widths."""
    if any(n.rsplit(".", 1)[-1] in ("alpha", "weight_scale") for n, _ in model.named_parameters()):
        print(f"stelab train: {init} has no config.json this version can read, so the widths it was trained at are "
              "unknown and its learned steps are loaded as they are (not re-fitted); if it was trained at other "
              "widths, start from its float network or put its config.json beside it", file=sys.stderr)
