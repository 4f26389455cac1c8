"""Reproductions of Yin et al. (2019): Table 1 (:class:`Table1Config` -> :func:`run_table1`) and the instability
experiment (:class:`InstabilityConfig` -> :func:`run_instability`); the paper's numbers live in
:mod:`stelab.experiments.reproduce.paper`."""

from .instability import DEFAULT_PAIRS, InstabilityConfig, instability_markdown, run_instability
from .paper import MODELS_BY_DATASET, TABLE1, paper_cell
from .table1 import Table1Config, aggregate, run_table1, table1_markdown, write_table1

__all__ = ["DEFAULT_PAIRS", "MODELS_BY_DATASET", "TABLE1", "InstabilityConfig", "Table1Config", "aggregate",
           "instability_markdown", "paper_cell", "run_instability", "run_table1", "table1_markdown", "write_table1"]
