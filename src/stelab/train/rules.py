"""Applying the one rule for what a resume (``train --resume``) or a rerun of a finished run (``reproduce``, ``card``)
may change: only the runtime fields, which change speed, memory or logging, never the numbers
(:func:`stelab.train.config.may_change`, declared with the fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import read_json
from .checkpoint import CHECKPOINT
from .config import TrainConfig, may_change
from .runs import CONFIG, METRICS, epoch_records

# Nested config sections and the prefix of their command-line flags (quant.bits -> --bits, weights.bits ->
# --weight-bits).
_SECTION_FLAGS = {"quant": "--", "weights": "--weight-"}


def config_differences(run_dir: Path, config: TrainConfig) -> list[str]:
    """What ``config`` changes of the run saved in ``run_dir`` beyond the runtime-only fields, as
    ``"lr (--lr): 0.01 -> 0.05"`` (nested fields by their flags). The one rule for what a resume (``train
    --resume``) or a rerun of a finished run (``reproduce``) may change: only :data:`RUNTIME_FIELDS`."""
    # Through TrainConfig, so that a config.json in the legacy flat form compares by meaning.
    saved = TrainConfig.from_dict(read_json(run_dir / CONFIG)).flat_dict()
    new = config.flat_dict()
    out = []
    for key in sorted(k for k in new if not may_change(k)):
        old_v, new_v = saved.get(key), new[key]
        if key in _SECTION_FLAGS and isinstance(old_v, dict) and isinstance(new_v, dict):
            for sub in sorted(set(old_v) | set(new_v)):
                if _jsonable(old_v.get(sub)) != _jsonable(new_v.get(sub)):
                    flag = _SECTION_FLAGS[key] + sub.replace("_", "-")
                    out.append(f"{key}.{sub} ({flag}): {old_v.get(sub)!r} -> {new_v.get(sub)!r}")
        elif _jsonable(old_v) != _jsonable(new_v):
            flag = {"quant": "--float/--bits", "weights": "--weight-bits"}.get(key, "--" + key.replace("_", "-"))
            out.append(f"{key} ({flag}): {old_v!r} -> {new_v!r}")
    return out


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    diff = config_differences(run_dir, config)
    if diff:
        raise ValueError(f"--resume with a different configuration than {run_dir / CONFIG} ({'; '.join(diff)}); "
                         "resume with the same flags or start a new --out folder")


def _check_not_orphaned(run_dir: Path) -> None:
    """Refuse a folder whose trained epochs lost the checkpoint they were saved with (deleted, or not copied with
    the folder): starting it afresh would overwrite their records, and 'resuming' it would silently start at epoch 1."""
    if (run_dir / CHECKPOINT).is_file():
        return
    trained = epoch_records(run_dir)
    if trained:
        raise ValueError(f"{run_dir} records {len(trained)} trained epoch(s) in {METRICS} but has no {CHECKPOINT} to "
                         f"continue from; put {CHECKPOINT} back to continue, or move the folder away to start over")


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


