"""Run folders: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``results.json``, ``report.md``, ``curves.png``.

``results.json`` is the run's summary; its ``status`` is "finished" or "diverged" (a non-finite training loss stopped
the run; its last good checkpoint is kept). A folder without it is unfinished and can be continued with ``--resume``.
Runs made before the rename hold ``summary.json`` instead, which is still read.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..io import epoch_axis, markdown_table, read_json, read_jsonl, save_figure, write_json, write_text
from .checkpoint import CheckpointError, load_state, load_weights, read_weights
from .config import TrainConfig
from .progressive import init_config, refit_steps, refit_unknown
from .quant_weights import quantize_run_weights

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "results.json"
LEGACY_SUMMARY = "summary.json"  # what runs made before the rename hold instead of results.json
DONE = ("finished", "diverged")


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's :class:`TrainConfig` (a config.json of the legacy flat form converts)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    return TrainConfig.from_dict(read_json(path))


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    for name in (SUMMARY, LEGACY_SUMMARY):
        path = Path(run_dir) / name
        if path.is_file():
            return read_json(path)
    return None


def is_done(run_dir: str | Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in DONE


def epoch_records(run_dir: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(run_dir) / METRICS) if r.get("kind") == "epoch"]


def build_model(config: TrainConfig, init: str | Path | None = None) -> nn.Module:
    """The run's model (activations per ``config.quant``, weights per ``config.weights``), with the weights of the
    checkpoint or run folder ``init`` when given. ``bn_affine`` gives the batch norms without affine parameters a
    scale and shift (1 and 0 unless ``init`` holds them).

    A float checkpoint loads into the float layers before their weights are quantized, so that a scale fitted to
    the weights (LSQ's initial step) is fitted to the loaded ones. A checkpoint of a weight-quantized run whose
    learned steps (``weight_scale``) the float layers lack loads after the quantization, steps included. Learned
    steps trained at other widths are re-fitted to this run's (:mod:`stelab.train.progressive`).
    """
    from .. import models

    placement = {} if config.act_placement == "relu" else {"placement": config.act_placement}
    model = models.build(config.model, quant=config.quant, num_classes=10, **placement)
    if init is None:
        _affine_batchnorms(model, config)
        return quantize_run_weights(model, config)
    state, blob = read_weights(init)
    plain = _plain_batchnorms(model)
    if isinstance(state, dict) and any(k.endswith(".weight") and k[:-7] in plain for k in state):
        if not config.bn_affine:
            raise CheckpointError(f"{init} was trained with affine batch norms (--bn-affine), which this run would "
                                  "drop; add --bn-affine (bn_affine=True)")
        _affine_batchnorms(model, config)  # their trained scales and shifts load as they are
    if config.weights is None or (isinstance(state, dict) and set(state) <= set(model.state_dict())):
        load_state(model, state, init, blob)
        quantize_run_weights(model, config)
    else:
        quantize_run_weights(model, config)
        load_state(model, state, init, blob)
    _affine_batchnorms(model, config)  # a start without them: gamma = 1, beta = 0, the same function
    source = init_config(init, blob)
    if source is not None:  # a quantized start at other widths: its learned steps re-fitted (progressive)
        refit_steps(model, source, init, state)
    elif any(k.rsplit(".", 1)[-1] in ("alpha", "weight_scale") for k in state):
        refit_unknown(model, init)
    return model


def _plain_batchnorms(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine}


def _affine_batchnorms(model: nn.Module, config: TrainConfig) -> None:
    if config.bn_affine:
        from ..models.layers import make_batchnorms_affine

        make_batchnorms_affine(model)


def load_model_from_run(run_dir: str | Path, checkpoint: str = "last") -> nn.Module:
    """The run's model with the weights of its last (or best) checkpoint, in eval mode on the CPU."""
    model = build_model(read_config(run_dir))
    load_weights(model, run_dir, checkpoint)
    return model.eval()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / SUMMARY, summary)
    rows = [[k, v] for k, v in summary.items() if not isinstance(v, (dict, list))]
    write_text(run_dir / "report.md", f"# {describe_run(run_dir)}\n\nRun folder `{run_dir}`.\n\n"
               + markdown_table(["key", "value"], rows) + "\n![training curves](curves.png)\n")


DEFAULT_DECAY = TrainConfig().weight_decay


def describe_run(run_dir: Path) -> str:
    """What was trained, from the run's ``config.json``: model, data, quantization, seed, rate (and the weight decay
    when it is not the default) and epochs."""
    try:
        c = read_config(run_dir)
    except (FileNotFoundError, ValueError, KeyError):
        return f"Run {Path(run_dir).name}"
    q, w = c.quant, c.weights
    kind = "float" if q is None else f"{q.bits}-bit {q.forward}, STE {q.ste}"
    if q is not None and q.learn_alpha:
        kind += f", learned alpha ({q.alpha_rule})"
    if q is not None and c.act_placement != "relu":
        kind += f", quantized at the {c.act_placement.replace('_', ' ')}s"
    if c.bn_affine:
        kind += ", affine batch norms"
    if w is not None:
        kind = (f"{w.effective_bits}-bit {w.quantizer} weights ({w.rule}, {c.optimizer}), "
                f"{'float activations' if q is None else kind}")
    data = f"{c.dataset} (synthetic, {c.synthetic} images)" if c.synthetic else c.dataset
    start = (f", wd {c.weight_decay:g}" if c.weight_decay != DEFAULT_DECAY else "")  # runs that differ only in it
    start += (", from a trained model" if c.init else "") + (", distilled" if c.distill else "")
    if c.step_lr_scale != 1.0:  # a frozen (0) or slowed step is a different recipe: the title says so
        start += f", learned steps at {c.step_lr_scale:g} x lr"
    if c.step_weight_decay is not None:
        start += f", step decay {c.step_weight_decay:g}"
    return (f"{c.model} on {data}, {kind}, seed {c.seed}: lr {c.resolved_lr():g}{start}, "
            f"{c.resolved_epochs()} epoch{'s' * (c.resolved_epochs() != 1)}")


def _distilled(run_dir: Path) -> bool:
    try:
        return bool(read_config(run_dir).distill)
    except (FileNotFoundError, ValueError, KeyError):
        return False


def plot_curves(run_dir: Path, records: list[dict[str, Any]] | None = None, title: str | None = None) -> Path | None:
    """Training/test loss (log scale) and accuracy per epoch -> ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = epoch_records(run_dir) if records is None else records
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for key, style in (("train", "-o"), ("test", "--s")):  # markers: a one-epoch run still shows its points
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in records], style, ms=5, label=key)
        ax_acc.plot(epochs, [100 * r[f"{key}_acc"] for r in records], style, ms=5, label=key)
    distilled = _distilled(run_dir) if title is None else False
    ax_loss.set(xlabel="epoch", yscale="log", title="loss (train: the distillation objective)" if distilled else "loss",
                ylabel="loss (log)" if distilled else "cross-entropy loss (log)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        epoch_axis(ax, epochs)
    # wrapped: a long description (weights, learned resolution, placement, distillation) would widen the figure
    fig.suptitle(textwrap.fill(title or describe_run(run_dir), 110), fontsize=11)
    return save_figure(fig, run_dir / "curves.png")


def run_summary(run_dir: Path, config: TrainConfig, status: str, step: int, wall: float, world_size: int = 1,
                is_main: bool = True) -> dict[str, Any]:
    """The run's summary (``results.json``) from its epoch records."""
    records = [r for r in read_jsonl(run_dir / METRICS) if r.get("kind") == "epoch"] if is_main else []
    last = records[-1] if records else {}
    q = config.quant
    summary: dict[str, Any] = {
        "status": status, "run": run_dir.name, "model": config.model, "dataset": config.dataset,
        "bits": q.bits if q else None, "ste": q.ste if q else "float", "seed": config.seed,
        "epochs": config.resolved_epochs(), "epochs_done": last.get("epoch", 0), "steps": step,
        "processes": world_size, "wall_time_s": wall,
    }
    if config.weights is not None:  # only then: activation-only summaries keep their keys
        summary.update(weight_quantizer=config.weights.quantizer, weight_bits=config.weights.effective_bits,
                       optimizer=config.optimizer)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        summary[key] = last.get(key)
    if records:
        summary["best_test_acc"] = max(r["test_acc"] for r in records)
        summary["images_per_s"] = sum(r["images_per_s"] for r in records) / len(records)
    return summary


def load_split(config: TrainConfig, split: str) -> tuple[Tensor, Tensor]:
    """The run's ``"train"`` or ``"test"`` images and labels: the data set (or synthetic images), cut to the limit."""
    from .. import data

    if config.synthetic:
        n = config.synthetic if split == "train" else max(1, config.synthetic // 4)
        images, labels = data.synthetic(config.dataset, n, seed=config.seed + (split == "test"))
    else:
        images, labels = data.load(config.dataset, config.data_dir, split=split)
    limit = config.limit_train if split == "train" else config.limit_test
    return (images[:limit], labels[:limit]) if limit else (images, labels)
