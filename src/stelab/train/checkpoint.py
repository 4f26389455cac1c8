"""Checkpoints: everything a run needs to continue bit-identically (model, optimizer, scheduler, RNG, epoch).

A checkpoint is written atomically (:func:`stelab.io.save_torch`) at the end of every finished epoch, so a run
killed at any moment leaves the previous complete checkpoint. The data order of an epoch is a pure function of
``(seed, epoch)`` (``DeviceLoader.set_epoch``), and the remaining randomness (dropout, user hooks) comes from the
global generators saved here, which is why a resumed run replays the uninterrupted one exactly.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import save_torch

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / ``torch.compile`` wrappers (their state-dict keys carry a prefix)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model: nn.Module, optimizer, scheduler, epoch: int, step: int,
                    config: dict, best: dict | None = None, elapsed_s: float = 0.0) -> Path:
    """``epoch`` is the number of finished epochs; ``step`` the number of optimizer steps taken; ``elapsed_s`` the
    wall time so far (a resumed run reports the total)."""
    return save_torch(path, {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "epoch": epoch,
        "step": step,
        "config": config,
        "best": best,
        "elapsed_s": elapsed_s,
    })


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or holds the weights of another model."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The object saved in ``path``; a file torch cannot read (truncated, emptied, not a checkpoint) raises
    :class:`CheckpointError` saying so in one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        # RNG states hold numpy objects, so this is a full (trusted, own-run) unpickle.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({type(err).__name__}: {reason[:120]}); it is truncated, "
            f"damaged or another kind of file: pass a checkpoint.pt or run folder, or delete {path.name} and rerun "
            "to train the run again from its start") from None


def resolve_checkpoint(path: str | Path, checkpoint: str = "last") -> Path:
    """A checkpoint file, or a run folder plus ``checkpoint`` in ("last", "best") -> the file."""
    path = Path(path)
    if path.is_dir():
        names = {"last": CHECKPOINT, "best": BEST}
        if checkpoint not in names:
            raise ValueError(f"unknown checkpoint {checkpoint!r}; valid choices: best, last")
        folder, path = path, path / names[checkpoint]
        if not path.is_file() and checkpoint == "last" and (folder / "model.pt").is_file():
            path = folder / "model.pt"  # a folder committed under results/ keeps the weights alone, as model.pt
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (a run folder holds {CHECKPOINT}, a results/ folder "
                                "model.pt; pass the folder or file)")
    return path


def read_weights(path: str | Path, checkpoint: str = "last") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model state dict, whole checkpoint)`` of a run folder or checkpoint file (a full checkpoint or a bare state
    dict, whose "whole checkpoint" is then ``{}``)."""
    blob = load_checkpoint(resolve_checkpoint(path, checkpoint))
    state = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
    return state, (blob if isinstance(blob, dict) else {})


def load_weights(model: nn.Module, path: str | Path, checkpoint: str = "last") -> dict[str, Any]:
    """Load model weights from a run folder or checkpoint file (a full checkpoint or a bare state dict).

    A float model's weights load into its quantized twin: the state-dict keys match (fixed alphas are not stored).
    """
    state, blob = read_weights(path, checkpoint)
    load_state(model, state, path, blob)
    return blob


def _learned_resolutions(model: nn.Module) -> set[str]:
    """The keys of learned activation resolutions: a float checkpoint has none, and the layer keeps its initial
    value when one is missing (:class:`stelab.QuantReLU`), so a float start of a ``--learn-alpha`` run loads."""
    from ..activations.modules import QuantReLU

    return {f"{name}.alpha" if name else "alpha" for name, m in model.named_modules()
            if isinstance(m, QuantReLU) and m.config.learn_alpha}


def load_state(model: nn.Module, state: Any, source: str | Path, blob: dict[str, Any] | None = None) -> None:
    """``model.load_state_dict(state)`` (strict); a state of another model raises :class:`CheckpointError` naming
    the model the checkpoint was written for (from its saved config, when it has one) instead of listing keys."""
    target = unwrap(model)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} holds a {type(state).__name__}, not model weights; pass a checkpoint.pt or "
                              "run folder written by stelab train")
    own = target.state_dict()
    missing, unexpected = sorted(set(own) - set(state) - _learned_resolutions(target)), sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if hasattr(state[k], "shape") and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        saved = (blob or {}).get("config")
        name = saved.get("model") if isinstance(saved, dict) else None
        name = name.get("model") if isinstance(name, dict) else name  # the sectioned config: model.model
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mis-shaped tensors, e.g. "
                  f"{(missing or unexpected or sorted(shapes))[0]!r}")
        fix = f", or use --model {name} to start from this one" if name else ""
        raise CheckpointError(f"{source} holds the weights of {f'model {name!r}' if name else 'another model'}, not "
                              f"of this {type(target).__name__} ({detail}); pass a checkpoint of the model being "
                              f"built{fix}")
    target.load_state_dict(state)
