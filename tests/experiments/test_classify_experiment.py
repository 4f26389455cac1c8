"""The ``stelab classify`` experiment: the synthetic grid it runs and the per-STE summary over seeds."""

from __future__ import annotations

from stelab import ste as ste_registry
from stelab.experiments.classify import SyntheticSettings, summarise


def test_the_grid_has_one_run_per_section_kind_bits_ste_and_seed():
    settings = SyntheticSettings(kinds=("cones",), stes=("relu", "hat"), bits=(1, 2), seeds=(0, 1),
                                 minibatch_bits=(2,), trained_readout_bits=())
    runs = settings.runs()
    assert len(runs) == (2 + 1) * 2 * 2
    assert {(r[0], r[2]) for r in runs} == {("main", 1), ("main", 2), ("minibatch", 2)}
    assert all(cfg.fixed_readout and cfg.ste == ste and cfg.seed == seed for _, _, _, ste, seed, cfg in runs)
    assert {r[3] for r in SyntheticSettings(kinds=("cones",)).runs()} == set(ste_registry.names())


def test_summary_counts_perfect_and_zero_loss_runs_over_seeds():
    record = {"section": "main", "kind": "cones", "bits": 2, "ste": "relu"}
    rows = summarise([{**record, "accuracy": 1.0, "loss": 0.0, "first_step_zero_loss": 30},
                      {**record, "accuracy": 0.5, "loss": 2.0, "first_step_zero_loss": None}])
    assert rows == [{**record, "seeds": 2, "perfect": 1, "zero_loss": 1, "median_step_zero_loss": 30,
                     "mean_accuracy": 0.75, "mean_loss": 1.0}]
