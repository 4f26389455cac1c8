"""``stelab theory``: the two-layer theory lab of Yin et al. (ICLR 2019). :class:`TheoryConfig` -> :func:`run_theory`
(runs :mod:`.experiments` on :mod:`stelab.theory.two_layer`) -> ``results`` -> the run folder (:mod:`.report`)."""

from .experiments import TheoryConfig
from .report import run_theory

__all__ = ["TheoryConfig", "run_theory"]
