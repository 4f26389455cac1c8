"""``stelab diagnose``: :class:`DiagnoseConfig` -> :func:`run_diagnose` (load the checkpoint, gradient fidelity,
activation statistics, optional zeroth-order and two-layer checks) -> results -> the run folder (:mod:`.report`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...diagnostics import DEFAULT_STES, DEFAULT_WIDTHS, activation_statistics, gradient_fidelity
from ...diagnostics.fidelity import zeroth_order_comparison
from ...diagnostics.two_layer_check import cross_check, default_problem
from ...errors import check_bits, check_choice
from ...io import JsonConfig
from ...ste import DEFAULT_STE
from ..shape import finding
from .report import hook_records, write_report


@dataclass(frozen=True)
class DiagnoseConfig(JsonConfig):
    """What to diagnose (a run folder, or a model name with a checkpoint file) and how."""

    run_dir: str | None = None
    model: str | None = None
    checkpoint: str = "last"  # 'last' | 'best' of run_dir, or a checkpoint file with model
    dataset: str | None = None  # default: the run's, or the model's
    bits: int | None = None  # a float model is quantized at these bits (default 2); a quantized run keeps its own
    stes: tuple[str, ...] = DEFAULT_STES
    widths: tuple[float, ...] = DEFAULT_WIDTHS
    batches: int = 16
    batch_size: int = 256
    split: str = "train"
    mode: str = "train"  # BN/dropout mode of the gradient
    seed: int = 0
    synthetic: int = 0
    data_dir: str | None = None
    two_layer: bool = False
    zo_directions: int = 0
    zo_sigma: float = 0.01
    zo_batches: int = 2

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, ("train", "eval"))
        if self.bits is not None:
            try:
                check_bits(self.bits)
            except (TypeError, ValueError) as err:
                raise ValueError(f"--bits: {err}") from None
        if self.batches < 2:
            raise ValueError(f"--batches must be >= 2 for confidence intervals, got {self.batches}")
        if self.run_dir and self.model:
            raise ValueError("give RUN_DIR or --model/--checkpoint, not both")
        if not self.run_dir and (not self.model or self.checkpoint in ("last", "best")):
            raise ValueError("give RUN_DIR, or --model NAME together with --checkpoint PATH")

    def default_out(self) -> Path:
        return Path(self.run_dir) / "diagnostics" if self.run_dir else Path("runs") / f"diagnose-{self.model}"


def load_model(config: DiagnoseConfig):
    """The model with the checkpoint's weights, quantized (a float checkpoint loads into its quantized twin), its
    data set and the report's description of it."""
    from ... import models
    from ...activations.config import QuantConfig
    from ...train import load_weights, read_config
    from ...train.runs import build_model

    if config.run_dir:
        run = read_config(config.run_dir)
        run_quant = run.quant  # the run's own forward / alpha / STE when it is quantized
        name, dataset = run.model, run.dataset
        run_bits, ste = (run_quant.bits, run_quant.ste) if run_quant else (None, DEFAULT_STE)
        source = Path(config.run_dir)
    else:
        check_choice("model", config.model, models.names())
        name, dataset, run_bits, ste = config.model, models.DEFAULT_DATASET[config.model], None, DEFAULT_STE
        run_quant = None
        source = Path(config.checkpoint)
    bits = run_bits if run_bits is not None else (config.bits if config.bits is not None else 2)
    if run_bits is not None and config.bits not in (None, run_bits):
        raise ValueError(f"the run is quantized at {run_bits} bits; --bits {config.bits} does not apply")
    quant = run_quant or QuantConfig(bits=bits, ste=ste)
    # a run folder's model as the run built it (quantized weights too); learned steps load with the checkpoint
    model = build_model(run.replace(quant=quant)) if config.run_dir else models.build(name, quant=quant)
    # a float checkpoint loads into the quantized twin (same keys): "trained float, then quantized"
    load_weights(model, source, config.checkpoint if config.run_dir else "last")
    meta = {"model": name, "checkpoint": str(source if not config.run_dir else f"{source} ({config.checkpoint})"),
            "trained_as": "float" if run_bits is None else f"{run_bits}-bit {ste}", "bits": bits}
    weights = run.weights if config.run_dir else None
    if weights is not None:
        meta["trained_as"] += f", {weights.effective_bits}-bit {weights.quantizer} weights"
    dataset = config.dataset or dataset
    models.check_dataset(name, dataset)  # --dataset must give the inputs the model is built for
    return model, dataset, meta


def load_batches(config: DiagnoseConfig, dataset: str) -> list:
    """The first ``config.batches`` shuffled batches of the data set (or of synthetic images), normalised."""
    from ... import data

    if config.synthetic:
        images, labels = data.synthetic(dataset, config.synthetic, seed=config.seed)
    else:
        images, labels = data.load(dataset, config.data_dir, check_choice("split", config.split, data.SPLITS))
    mean, std = data.STATS[dataset]
    loader = data.DeviceLoader(images, labels, batch_size=config.batch_size, shuffle=True, augment=False, mean=mean,
                               std=std, seed=config.seed, drop_last=True)
    if len(loader) < config.batches:
        raise ValueError(f"{dataset} {config.split} has {len(loader)} batches of {config.batch_size}; "
                         f"asked for --batches {config.batches}")
    out = []
    for i, batch in enumerate(loader):
        if i >= config.batches:
            break
        out.append(batch)
    return out


def run_diagnose(config: DiagnoseConfig, out: str | Path, progress: bool = True, loaded=None) -> dict[str, Any]:
    """Run every check the config asks for, write the run folder and return its parts. ``loaded``: what
    :func:`load_model` returned, when the caller loaded the model already (to check it before the output folder)."""
    model, dataset, meta = loaded or load_model(config)
    model.train(config.mode == "train")
    batches = load_batches(config, dataset)
    # lists, as the command line gives them: the report's settings table prints them as such
    meta.update({"dataset": dataset, "split": config.split, "synthetic": config.synthetic, "mode": config.mode,
                 "batches": config.batches, "batch_size": config.batch_size,
                 "widths (s/alpha)": list(config.widths), "seed": config.seed})
    stes, widths = list(config.stes), list(config.widths)
    result = gradient_fidelity(model, batches, stes, widths, seed=config.seed, progress=progress)
    stats = activation_statistics(model, torch.cat([x for x, _ in batches[:4]]))
    records = hook_records(config.run_dir) if config.run_dir else []
    zeroth_order = None
    if config.zo_directions:
        zeroth_order = zeroth_order_comparison(model, batches[: config.zo_batches], stes, widths, config.zo_sigma,
                                               config.zo_directions, seed=config.seed)
    # the cross-check's table is about the paper's STEs (DEFAULT_STES); other --stes are left out of it
    two_layer = cross_check(*default_problem(), stes=[s for s in stes if s in DEFAULT_STES] or DEFAULT_STES) \
        if config.two_layer else None
    title = f"Gradient fidelity: {meta['model']} / {dataset} ({meta['trained_as']})"
    found = findings(result)
    write_report(out, title=title, meta=meta, result=result, stats=stats, records=records, two_layer=two_layer,
                 zeroth_order=zeroth_order, findings=found)
    return {"title": title, "meta": meta, "fidelity": result, "activations": stats, "hook_records": records,
            "zeroth_order": zeroth_order, "two_layer": two_layer, "findings": found}


def findings(result: Any) -> list[dict[str, Any]]:
    """Per STE, its whole-model cosine with the narrowest smoothed reference (a measurement)."""
    out = []
    for ste in result.stes:
        row = result.get(ste)
        out.append(finding(f"fidelity:{row['ste']}", f"{row['ste']}: whole-model cosine {row['cosine']:.3f} with the "
                           f"smoothed gradient ({row['reference']}, {result.n_batches} batches)"))
    return out
