"""``stelab diagnose``: :class:`DiagnoseConfig` -> :func:`run_diagnose` -> the run folder (``report.md``,
``results.json``, plots; :mod:`.report`)."""

from .report import JSON_NAME, MARKDOWN_NAME, hook_records, write_report
from .run import DiagnoseConfig, load_batches, load_model, run_diagnose

__all__ = ["JSON_NAME", "MARKDOWN_NAME", "DiagnoseConfig", "hook_records", "load_batches", "load_model",
           "run_diagnose", "write_report"]
