"""Run folders: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``/``.md``, ``curves.png``.

``status`` in ``summary.json`` is "finished" or "diverged" (a non-finite training loss stopped the run; its last
good checkpoint is kept). A folder without a summary is unfinished and can be continued with ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..io import markdown_table, read_json, read_jsonl, save_figure, write_json, write_text
from .checkpoint import load_weights
from .config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
DONE = ("finished", "diverged")


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG}")
    return TrainConfig.from_dict(read_json(path))


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY
    return read_json(path) if path.is_file() else None


def is_done(run_dir: str | Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in DONE


def epoch_records(run_dir: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(Path(run_dir) / METRICS) if r.get("kind") == "epoch"]


def build_model(config: TrainConfig) -> nn.Module:
    from .. import models

    return models.build(config.model, quant=config.quant_config(), num_classes=10)


def load_model_from_run(run_dir: str | Path, checkpoint: str = "last") -> nn.Module:
    """The run's model with the weights of its last (or best) checkpoint, in eval mode on the CPU."""
    model = build_model(read_config(run_dir))
    load_weights(model, run_dir, checkpoint)
    return model.eval()


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json(run_dir / SUMMARY, summary)
    rows = [[k, v] for k, v in summary.items() if not isinstance(v, (dict, list))]
    write_text(run_dir / "summary.md", f"# Run {run_dir.name}\n\n" + markdown_table(["key", "value"], rows))


def plot_curves(run_dir: Path, records: list[dict[str, Any]] | None = None, title: str | None = None) -> Path | None:
    """Training/test loss (log scale) and accuracy per epoch -> ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = epoch_records(run_dir) if records is None else records
    if not records:
        return None
    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in records], style, label=key)
        ax_acc.plot(epochs, [100 * r[f"{key}_acc"] for r in records], style, label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or run_dir.name)
    return save_figure(fig, run_dir / "curves.png")
