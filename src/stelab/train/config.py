r"""``TrainConfig``: every hyper-parameter of a training run, round-tripping to the run's ``config.json``.

Learning-rate schedule (step decay, ``MultiStepLR``):

.. math::  \eta_t = \eta_0 \, \gamma^{\#\{m \in M : m \le t\}}, \qquad M = \{\lfloor f E \rfloor : f \in F\}

or, with ``lr_schedule="cosine"``, :math:`\eta_t = \eta_0 (1 + \cos(\pi t / E)) / 2` (per epoch; milestones and
gamma unused), which suits short schedules better. With ``warmup_epochs`` :math:`w > 0` the first
:math:`S = \mathrm{round}(w N)` optimizer steps (``N`` steps per epoch) take :math:`\eta_t (s + 1) / S` at step
:math:`s = 0 .. S - 1` (a per-step linear warm-up on top of the schedule: large from-scratch rates such as VGG-11's
0.1 otherwise start badly);
with ``E`` the number of epochs and ``F = lr_milestones`` given as *fractions* of the run, so a shortened run
(``--epochs-scale``) keeps the same shape. Defaults: ``F = (0.5, 0.75)``, ``gamma = 0.1`` -- the schedule of
He et al. (2016) for CIFAR ResNets (decay at 50% and 75% of training), which the paper's VGG/ResNet baselines follow;
``eta_0`` is picked by how the run starts, not by whether it is quantized: ``0.1`` from scratch (float or quantized:
a random start needs the large steps), ``0.01`` when fine-tuning from a trained model (``init``, e.g. the float
minimum a quantized model starts from in Yin et al. 2019), which the from-scratch rate would throw out of its basin.

Quantized weights (``weights``, a :class:`~stelab.weights.WeightQuantConfig`) and the optimizer wrappers of
:mod:`stelab.weights.optim`. BinaryRelax's schedule is given as fractions of the run (like the milestones), so that a
shortened run keeps its shape: with :math:`T` the run's optimizer steps and :math:`T_h = \max(1,
\mathrm{round}(h T))` (``h = relax_hard_at``), :math:`\lambda_t = \lambda_0 G^{t / T_h}` for :math:`t < T_h`
(``G = relax_growth``: per-step rate :math:`G^{1/T_h}`), then the hard phase (:math:`Q(w_f)`) for the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import models
from ..activations.config import QuantConfig
from ..errors import check_choice
from ..io import JsonConfig
from ..weights import WeightQuantConfig
from ..weights import quantizers as weight_quantizers
from . import checks
from .sections import (  # noqa: F401  (the vocabulary, importable from here as before)
    CHANNELS_LAST_DEFAULT,
    DATASETS,
    DEVICES,
    LEGACY_QUANT_FIELDS,
    MODEL_EPOCHS,
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    SECTIONS,
    _f,
    _flag,
)


def _training_quant(quant: QuantConfig) -> QuantConfig:
    # check_nan off: the loop checks the loss every step, which catches the same NaNs without a sync per layer.
    return quant if not quant.check_nan else quant.replace(check_nan=False)


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    r"""One training run. ``quant`` is how every activation is quantized (a :class:`QuantConfig`; default: 2 bits,
    the staircase at Lloyd's resolution, the default STE), ``None`` trains the float model (ReLU activations).
    ``quant.check_nan`` is always off in training: the loop checks the loss every step instead (no host sync per
    layer); a ``quant`` given with it on is stored with it off.

    ``init`` is a float (or quantized) checkpoint file or run folder whose weights start the run.
    ``lr=None`` picks 0.1 from scratch and 0.01 with ``init`` (fine-tuning); ``epochs=None`` the paper's count.
    ``precision="bf16"`` runs forward and loss under ``torch.autocast`` (bfloat16 matmuls and convolutions, float32
    weights and optimizer); ``channels_last=None`` picks the faster memory format measured for the model and device.
    ``pack_saved`` keeps the quantized activations' outputs that autograd saves as packed n-bit codes and restores
    them exactly for the backward (:class:`stelab.PackSaved`): the same gradients and weights in less memory, so it
    may change between a run and its resumption; not with ``compile``. ``recompute`` (with ``pack_saved``) also
    keeps each convolution's output as a recipe and recomputes it in the backward, bit for bit
    (:mod:`stelab.pack.recompute`): less memory again, for one more convolution forward per layer;
    ``recompute_limit`` recomputes only the convolutions costing at most that many multiply-adds per output element
    (``C_in/groups * kh * kw``; ``None``: all).
    ``ste_schedule`` schedules parameters of the activations' STE over the run, once per epoch
    (``("t=0.1:10:geometric",)``; :mod:`stelab.activations.schedule`).
    ``limit_train``/``limit_test`` keep the first N images (0 = all); ``synthetic`` > 0 replaces the data set by
    that many random images of the data set's shape (tests, benchmarks). ``augment=None`` means on for CIFAR-10.

    ``weights`` is how the Linear/Conv2d weights are quantized (a :class:`~stelab.weights.WeightQuantConfig`;
    ``None``, the default, keeps them float). The first conv and the last linear layer (first and last in module
    order) keep float weights unless ``weight_first_last``: a common practice of published low-bit results (see
    docs/weights.md), since those two layers hold few weights and are commonly reported to be the most sensitive.
    ``optimizer``: ``sgd``, or SGD wrapped by BCGD (``bcgd_rho``, default 1e-5: the value reported for the
    authors' demo) or BinaryRelax (``relax_lam`` :math:`\lambda_0 = 1`, the wrapper's default;
    ``relax_growth = 1e4``: :math:`\lambda` grows by this factor over the relaxed phase, so that at the switch
    (:math:`\lambda = 10^4` from :math:`\lambda_0 = 1`) the relaxed weights differ from :math:`Q(w_f)` by
    :math:`(w_f - Q(w_f))/(1 + \lambda)`, about 1e-4 of the quantization error, and the switch barely moves the
    forward;
    ``relax_hard_at = 0.8``: the last 20% of the steps train the exactly quantized weights, in the last rate stage of
    the default schedule). The two wrappers need ``weights``.
    """

    # Each field's section, command-line help and flag live here, once: `stelab train` derives its flags from them
    # (stelab.cli.fields), config.json nests the fields by section, and the runtime section is what a resume may
    # change (may_change).
    # -- model and data
    model: str = _f("model", "lenet5", lambda: f"{models.describe()}; default lenet5")
    dataset: str = _f("model", "mnist", "mnist | cifar10 (default mnist)")
    init: str | None = _f("model", None, "checkpoint file or run folder to start from (float or quantized; "
                                         "learned steps trained at other widths are re-fitted)")
    augment: bool | None = _f("model", None, "crop+flip augmentation (default: on for cifar10)", negatable=True)
    seed: int = _f("model", 0, "seed of the weights, the data order and the augmentation (default 0)")
    limit_train: int = _f("model", 0, "use the first N training images (0: all)", metavar="N")
    limit_test: int = _f("model", 0, "use the first N test images (0: all)", metavar="N")
    synthetic: int = _f("model", 0, "N random images instead of the data set", metavar="N")
    bn_affine: bool = _f("model", False, "give the batch norms before the activations a learnable scale and shift "
                                         "(started at 1 and 0: the same network; default: none, as built)")
    # -- schedule
    epochs: int | None = _f("schedule", None, "default: the paper's, 50 for the LeNets, 200 for vgg11/resnet20")
    lr: float | None = _f("schedule", None, "initial rate (default 0.1 from scratch, 0.01 when fine-tuning from "
                                            "--init)")
    lr_milestones: tuple[float, ...] = _f("schedule", (0.5, 0.75), "fractions of the run where the rate is cut by "
                                          "--lr-gamma (default 0.5 0.75; none: constant)", metavar="F")
    lr_gamma: float = _f("schedule", 0.1, "factor of each step-schedule cut (default 0.1)")
    lr_schedule: str = _f("schedule", "step", "step: multiply by --lr-gamma at --lr-milestones (default); cosine: "
                                              "cosine to 0 over the run", choices=SCHEDULES)
    warmup_epochs: float = _f("schedule", 0.0, "linear warm-up of the rate over the first W epochs, per step "
                                               "(default 0: none; reproduce table1: the float runs only)", metavar="W")
    batch_size: int = _f("schedule", 128, "global batch size over all processes (default 128)")
    # -- activations
    quant: QuantConfig | None = _f("activations", _training_quant(QuantConfig()), "")
    act_placement: str = _f("activations", "relu", "where activations are quantized: relu (every ReLU, the default) "
                            "| conv_input (each conv's input, the residual stream float; resnet20, with "
                            "--learn-alpha)", choices=models.PLACEMENTS)
    ste_schedule: tuple[str, ...] = _f(
        "activations", (), "schedule a parameter of --ste over the run, once per epoch; SHAPE linear (default), "
        "geometric or cosine; repeatable (e.g. --ste ede --ste-schedule t=0.1:10:geometric)",
        metavar="PARAM=START:END[:SHAPE]")
    # -- weights
    weights: WeightQuantConfig | None = _f("weights", None, "")
    weight_first_last: bool = _f("weights", False, "quantize the weights of the first conv and the last linear layer "
                                                   "too (default: they stay float, the common practice)")
    # -- optimizer
    optimizer: str = _f("optimizer", "sgd", "sgd | bcgd | binaryrelax: SGD, or SGD wrapped by BCGD or BinaryRelax "
                                            "(these need --weight-bits; default sgd)")
    momentum: float = _f("optimizer", 0.9, "SGD's momentum (default 0.9)")
    weight_decay: float = _f("optimizer", 1e-4, "L2 weight decay (default 1e-4)")
    nesterov: bool = _f("optimizer", False, "Nesterov momentum")
    step_lr_scale: float = _f("optimizer", 1.0, "rate of the learned steps (--learn-alpha resolutions, lsq weight "
                                                "steps) as a multiple of the weights' (default 1; 0 freezes them)",
                              metavar="F")
    step_weight_decay: float | None = _f("optimizer", None, "L2 decay of the learned steps (default: "
                                                            "--weight-decay)", metavar="D")
    bcgd_rho: float = _f("optimizer", 1e-5, "BCGD's blend rho (default 1e-05)")
    relax_lam: float = _f("optimizer", 1.0, "BinaryRelax's initial lambda (default 1)")
    relax_growth: float = _f("optimizer", 1e4, "factor BinaryRelax's lambda grows by over its relaxed phase "
                                               "(default 10000)")
    relax_hard_at: float = _f("optimizer", 0.8, "fraction of the run's steps after which BinaryRelax trains the "
                                                "exactly quantized weights (default 0.8; 1: never)")
    distill: str | None = _f("optimizer", None, "distil from this float teacher (a checkpoint file or run folder of "
                                                "the same --model): the loss becomes (1 - w) CE + w T^2 KL")
    distill_temperature: float = _f("optimizer", 4.0, "the distillation temperature T (default 4)", metavar="T")
    distill_weight: float = _f("optimizer", 0.5, "the weight w of the distillation term (default 0.5)", metavar="W")
    # -- runtime: speed, memory, logging and places; a resume may change these (except where they change numbers)
    out: str | None = _f("runtime", None, "run folder (default runs/<model>-<dataset>-<kind>-seed<seed>)")
    data_dir: str | None = _f("runtime", None, "folder holding MNIST/ and cifar-10-batches-py/")
    device: str = _f("runtime", "auto", "auto | cpu | cuda (default auto)", choices=DEVICES)
    compile: bool = _f("runtime", False, "torch.compile the model")
    channels_last: bool | None = _f("runtime", None, "channels_last memory format (default: the faster one measured "
                                    "for the model and device, see BENCHMARKS.md)", negatable=True, numbers=True)
    precision: str = _f("runtime", "fp32", "fp32, or bf16 mixed precision (autocast; fastest on CPUs with AVX-512 "
                        "bf16/AMX and on GPUs; default fp32)", choices=PRECISIONS, numbers=True)
    eval_batch_size: int = _f("runtime", 1000, "batch size of the test pass (default 1000)")
    diagnose_every: int = _f("runtime", 0, "run stelab.diagnostics.DiagnosticsHook every N steps (0 = off)",
                             metavar="N")
    save_best: bool = _f("runtime", False, "also keep best.pt (highest test accuracy)")
    pack_saved: bool = _f("runtime", False, "keep the quantized activations' outputs saved for backward as packed "
                          "n-bit codes, restored exactly: the same run in less memory (not with --compile; "
                          "docs/training.md)", negatable=True)
    recompute: bool = _f("runtime", False, "with --pack-saved: recompute each convolution's output in the backward "
                         "instead of keeping it (bit for bit; less memory again for one more convolution forward)",
                         negatable=True)
    recompute_limit: int | None = _f("runtime", None, "with --recompute: only the convolutions costing at most MACS "
                                     "multiply-adds per output element (C_in/groups * kh * kw; e.g. 300: the cheap "
                                     "early layers, most of the memory)", metavar="MACS")

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        from ..models import check_dataset

        check_dataset(self.model, self.dataset)  # before any folder is made: a mismatch fails deep inside torch
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("lr schedule", self.lr_schedule, SCHEDULES)
        if isinstance(self.quant, dict):  # the nested form of to_dict, e.g. from a config.json
            object.__setattr__(self, "quant", QuantConfig.from_dict(self.quant))
        if self.quant is not None:
            if not isinstance(self.quant, QuantConfig):
                raise TypeError(f"quant must be a stelab.QuantConfig or None (float model), got {self.quant!r}")
            object.__setattr__(self, "quant", _training_quant(self.quant))
        checks.placement(self)
        checks.weights(self)
        checks.learned_steps(self)
        checks.pack_saved(self)
        checks.ste_schedule(self)
        object.__setattr__(self, "lr_milestones", tuple(float(m) for m in self.lr_milestones))
        if any(not 0.0 < m < 1.0 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of the run in (0, 1), got "
                             f"{list(self.lr_milestones)}" + _flag("lr_milestones"))
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}" + _flag(name))
        for name in ("limit_train", "limit_test", "synthetic", "diagnose_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}" + _flag(name))
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}" + _flag("epochs"))
        if not 0.0 <= self.warmup_epochs < self.resolved_epochs():
            raise ValueError(f"warmup_epochs must be >= 0 and shorter than the run's "
                             f"{self.resolved_epochs()} epochs, got {self.warmup_epochs}" + _flag("warmup_epochs"))
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}" + _flag("lr"))
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}" + _flag("momentum"))
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}" + _flag("weight_decay"))
        if not self.lr_gamma > 0:
            raise ValueError(f"lr_gamma must be > 0, got {self.lr_gamma}" + _flag("lr_gamma"))

    def to_dict(self) -> dict[str, Any]:
        """config.json's form: the fields nested by section (:data:`SECTIONS`), ``quant`` and ``weights`` as dicts."""
        flat = self.flat_dict()
        return {s: {name: flat[name] for name in section_fields(s)} for s in SECTIONS}

    def flat_dict(self) -> dict[str, Any]:
        """Every field by name, without the sections (``quant`` and ``weights`` as dicts)."""
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        """The fields of one section (:data:`SECTIONS`) and their values, e.g. ``config.section("schedule")``."""
        check_choice("section", name, SECTIONS)
        return {f: getattr(self, f) for f in section_fields(name)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config of ``data``: ``to_dict``'s form (nested by section), the flat form of config.json files
        written before the sections, or the older flat form from before ``quant`` existed (``bits``, ``ste``,
        ``forward``, ``alpha`` at the top; ``"bits": null`` for float)."""
        if data and set(data) <= set(SECTIONS) and all(isinstance(v, dict) for v in data.values()):
            flat: dict[str, Any] = {}
            for name, values in data.items():
                unknown = sorted(set(values) - set(section_fields(name)))
                if unknown:
                    raise ValueError(f"unknown TrainConfig field(s) {unknown} in section {name!r}; valid fields "
                                     f"there: {', '.join(section_fields(name))}")
                flat.update(values)
            data = flat
        legacy = [k for k in LEGACY_QUANT_FIELDS if k in data]
        if legacy:
            if "quant" in data:
                raise ValueError(f"config has both 'quant' and the legacy flat field(s) {legacy}; keep 'quant'")
            flat = {k: data[k] for k in legacy}
            rest = {k: v for k, v in data.items() if k not in LEGACY_QUANT_FIELDS}
            quant = None if flat.get("bits", 2) is None else QuantConfig(**flat)
            data = {**rest, "quant": quant}
        return super().from_dict(data)

    @property
    def quantized(self) -> bool:
        return self.quant is not None

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else MODEL_EPOCHS.get(self.model, 50)

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.init else 0.1

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the linear warm-up: ``round(warmup_epochs * steps_per_epoch)`` (0: none)."""
        return round(self.warmup_epochs * steps_per_epoch)

    def lr_reason(self) -> str:
        """Why :meth:`resolved_lr` is what it is, for the message at the start of a run."""
        if self.lr is not None:
            return "set by --lr"
        if self.init:
            return f"fine-tuning rate: the run starts from the trained model {self.init}; --lr to change"
        return "from-scratch rate: no --init; --lr to change"

    def milestone_epochs(self) -> list[int]:
        """Epoch indices (0-based, counted at the start of an epoch) where the rate is multiplied by gamma."""
        epochs = self.resolved_epochs()
        return sorted({max(1, int(f * epochs)) for f in self.lr_milestones if int(f * epochs) < epochs})

    def resolved_channels_last(self, device_type: str) -> bool:
        """``channels_last`` as given, else the measured faster format for this model on this device type."""
        if self.channels_last is not None:
            return self.channels_last
        return CHANNELS_LAST_DEFAULT.get((device_type, self.model), False)

    def precision_note(self) -> str | None:
        """A note when ``bf16`` would run on a CPU without native bfloat16 (AVX512-BF16 or AMX): autocast then
        emulates it, about 2x slower than fp32 (VGG-11 training measured at 71 against 135 images/s)."""
        import torch

        on_cpu = self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available())
        if self.precision != "bf16" or not on_cpu or torch.cpu._is_avx512_bf16_supported() \
                or torch.cpu._is_amx_tile_supported():
            return None
        return ("this CPU has no native bfloat16 (AVX512-BF16 or AMX): --precision bf16 is emulated here and about 2x "
                "slower than fp32 (BENCHMARKS.md); the results are bf16's either way")

    def resolved_augment(self) -> bool:
        return self.augment if self.augment is not None else self.dataset == "cifar10"

    def run_kind(self) -> str:
        """What is quantized and how: ``float`` or ``<bits>bit-<ste>`` for activation-only runs (the names runs/ and
        results/ already use), ``w<W>a<A>-<ste>`` with quantized weights (``w1`` binary, ``w2t`` ternary, ``w<b>``
        uniform; ``a32`` for float activations), then ``-learned_<alpha rule>`` for a learned activation resolution,
        ``-conv_input`` for that placement, ``-bn_affine`` with affine batch norms, and ``-<optimizer>`` unless sgd.
        Table 1 names its cells so."""
        q = self.quant
        learned = f"-learned_{q.alpha_rule}" if q is not None and q.learn_alpha else ""
        if q is not None and self.act_placement != "relu":
            learned += f"-{self.act_placement}"
        learned += "-bn_affine" if self.bn_affine else ""
        if self.weights is None:
            return "float" + learned if q is None else f"{q.bits}bit-{q.ste}{learned}"
        tag = self.weight_tag()
        kind = f"{tag}a32" if q is None else f"{tag}a{q.bits}-{q.ste}{learned}"
        return kind + ("" if self.optimizer == "sgd" else f"-{self.optimizer}")

    def weight_tag(self) -> str:
        """The weight part of :meth:`run_kind`: ``""`` for float weights, else the quantizer's tag (``w1`` binary,
        ``w2t`` ternary, ``w<b>`` uniform)."""
        w = self.weights
        if w is None:
            return ""
        return weight_quantizers.get(w.quantizer).tag(w.effective_bits)

    def run_name(self) -> str:
        """``<model>-<dataset>-<kind>-seed<s>`` (:meth:`run_kind`)."""
        kind = self.run_kind()
        return f"{self.model}-{self.dataset}-{kind}-seed{self.seed}"


def section_fields(name: str) -> tuple[str, ...]:
    """The names of the fields of section ``name``, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["section"] == name)


def may_change(name: str) -> bool:
    """The one rule for what a resume (``train --resume``) or a rerun of a finished run (``reproduce``, ``card``)
    may change: a field of the runtime section that does not change the numbers (so not ``precision`` or
    ``channels_last``)."""
    meta = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}[name]
    return meta["section"] == "runtime" and not meta["numbers"]


#: The fields :func:`may_change` allows to differ between a run and its resumption.
RUNTIME_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if may_change(f.name))
