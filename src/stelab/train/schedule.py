"""The learning-rate schedule of a run: step decay or cosine per epoch (:func:`make_scheduler`), and the per-step
linear warm-up on top of it (:func:`warmup_step`); the math is in :mod:`stelab.train.config`."""

from __future__ import annotations

from typing import Any

import torch

from .config import TrainConfig


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay at the milestones, or a cosine from the initial rate to 0 over the run (stepped per epoch)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.resolved_epochs())
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestone_epochs(), config.lr_gamma)


def warmup_step(scheduler: Any, optimizer: Any, step: int, warmup_steps: int) -> None:
    """One optimizer step at ``(step + 1) / S`` of the scheduled rate (TrainConfig's linear warm-up). The scheduled
    rate is put back right after: the epoch schedulers (cosine's chainable form reads the group's rate) must never
    see the warmed-up one, so the schedule and a resumed run are as without warm-up."""
    groups = scheduler.optimizer.param_groups
    scheduled = [g["lr"] for g in groups]
    factor = (step + 1) / warmup_steps
    for g, lr in zip(groups, scheduled):
        g["lr"] = lr * factor
    try:
        optimizer.step()
    finally:
        for g, lr in zip(groups, scheduled):
            g["lr"] = lr
