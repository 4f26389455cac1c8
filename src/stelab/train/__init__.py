"""Training: :class:`TrainConfig`, :func:`train` (SGD, step decay, resume, DDP, hooks from the caller), run folders.

``stelab train`` is the command-line face of :func:`train`; see ``docs/training.md``.
"""

from .checkpoint import load_checkpoint, load_weights
from .config import MODEL_EPOCHS, TrainConfig
from .hooks import HookSpec, TrainHook
from .loop import evaluate, train
from .runs import epoch_records, is_done, load_model_from_run, plot_curves, read_config, read_summary

__all__ = [
    "MODEL_EPOCHS",
    "HookSpec",
    "TrainConfig",
    "TrainHook",
    "epoch_records",
    "evaluate",
    "is_done",
    "load_checkpoint",
    "load_model_from_run",
    "load_weights",
    "plot_curves",
    "read_config",
    "read_summary",
    "train",
]
