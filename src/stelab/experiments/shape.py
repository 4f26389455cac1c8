"""The one shape of an experiment: a config dataclass -> ``run(config, out, progress=True)`` -> results -> report.

Every experiment (theory, symmetry, classify, diagnose, table1, instability, card, compare) is an :class:`Experiment`:
its config type (a :class:`stelab.io.JsonConfig`) and its ``run``, which writes the run folder ``out``
(``report.md``, ``results.json``, figures) and returns the results. A ``run`` may take runtime keywords after
these three (``executor=`` for the sweeps); nothing else. Their results say what the experiment found in one word,
``findings``: a list of :func:`finding` records, each a sentence, whether it held (``True``/``False`` for a claim
tested against the measured numbers, ``None`` for a measurement stated), and the evidence. The command line prints
them (:func:`finding_lines`), and :mod:`stelab.experiments.card` calls the experiments as these functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def finding(fid: str, text: str, held: bool | None = None, evidence: str = "") -> dict[str, Any]:
    """One finding: ``{"id", "text", "held", "evidence"}`` (``held`` None: a measurement, not a tested claim)."""
    return {"id": fid, "text": text, "held": None if held is None else bool(held), "evidence": evidence}


def finding_lines(results: dict[str, Any]) -> list[str]:
    """The findings of ``results`` for the terminal: one line each, marked by whether it held."""
    mark = {True: "held", False: "NOT HELD", None: "measured"}
    return [f"[{mark[f['held']]}] {f['text']}" for f in results.get("findings", [])]


@dataclass(frozen=True)
class Experiment:
    """An experiment: its ``name`` (the command), its config type and its ``run(config, out, progress=True)``."""

    name: str
    module: str
    config: str
    run: str

    def load(self) -> tuple[type, Callable[..., dict[str, Any]]]:
        """``(config type, run function)``, imported on first use."""
        m = importlib.import_module(self.module)
        return getattr(m, self.config), getattr(m, self.run)

    def __call__(self, config: Any, out: str | Path, progress: bool = True, **runtime: Any) -> dict[str, Any]:
        return self.load()[1](config, out, progress, **runtime)


_P = "stelab.experiments."
#: Every experiment, by command name (the modules load when one is used).
EXPERIMENTS = {e.name: e for e in (
    Experiment("theory", _P + "theory_lab", "TheoryConfig", "run_theory"),
    Experiment("symmetry", _P + "symmetry", "SymmetryConfig", "run_symmetry"),
    Experiment("classify", _P + "classify", "ClassifyConfig", "run_classify"),
    Experiment("diagnose", _P + "diagnose", "DiagnoseConfig", "run_diagnose"),
    Experiment("table1", _P + "reproduce", "Table1Config", "run_table1"),
    Experiment("instability", _P + "reproduce", "InstabilityConfig", "run_instability"),
    Experiment("card", _P + "card", "CardConfig", "run_card"),
    Experiment("compare", _P + "compare", "CompareConfig", "run_compare"),
)}
