"""``stelab card``: the STE report card. :class:`CardConfig` -> :func:`run_card` (the sections of
:mod:`.sections`, cached per STE, section, seed and learning rate) -> ``results`` (``ranking``, ``stes``,
``predictors``, ``recommendation``) -> the run folder (:mod:`.report`)."""

from .config import TIERS, CardConfig
from .run import run_card, spearman

__all__ = ["TIERS", "CardConfig", "run_card", "spearman"]
