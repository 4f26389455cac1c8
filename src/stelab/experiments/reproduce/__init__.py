"""Reproductions of Yin et al. (2019): Table 1 (:func:`run_table1`) and the instability experiment
(:func:`run_instability`); the paper's numbers live in :mod:`stelab.experiments.reproduce.paper`."""

from .instability import DEFAULT_PAIRS, run_instability
from .paper import TABLE1, paper_cell
from .table1 import aggregate, run_table1, table1_markdown

__all__ = ["DEFAULT_PAIRS", "TABLE1", "aggregate", "paper_cell", "run_instability", "run_table1",
           "table1_markdown"]
