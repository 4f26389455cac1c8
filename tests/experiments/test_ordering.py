"""The paired STE-ordering test of a multi-seed Table 1 sweep, against scipy's own paired t-test."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from stelab.experiments.reproduce.ordering import ordering_markdown, paired_difference, ste_ordering
from stelab.experiments.reproduce.table1 import table1_markdown

finite = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=8))
def test_paired_difference_matches_scipy_ttest_rel(pairs):
    a, b = (np.array(x, dtype=float) for x in zip(*pairs))
    d = (b - a).tolist()
    got = paired_difference(d)
    assert got["n"] == len(d) and got["wins"] == sum(x > 0 for x in d) and got["losses"] == sum(x < 0 for x in d)
    assert got["mean"] == pytest.approx(np.mean(d), abs=1e-12)
    assert got["sd"] == pytest.approx(np.std(d, ddof=1), abs=1e-12)
    if np.std(d, ddof=1) > 1e-6:  # scipy's own answer where it is well defined
        ref = stats.ttest_rel(b, a)
        assert got["t"] == pytest.approx(ref.statistic, rel=1e-6)
        assert got["p"] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)


def test_paired_difference_edge_cases():
    assert paired_difference([0.4])["t"] is None and paired_difference([0.4])["p"] is None
    same = paired_difference([0.3, 0.3, 0.3])
    assert same["t"] == math.inf and same["p"] == 0.0 and same["wins"] == 3
    zero = paired_difference([0.0, 0.0])
    assert zero["t"] == 0.0 and zero["p"] == 1.0 and zero["wins"] == zero["losses"] == 0


def _run(ste, seed, acc, bits=2, status="finished"):
    return {"model": "lenet5", "bits": bits, "ste": ste, "seed": seed, "status": status, "test_acc": acc,
            "train_loss": 0.01}


def test_ste_ordering_pairs_by_seed_and_gives_the_papers_difference():
    runs = [_run("identity", 0, 0.985), _run("relu", 0, 0.990), _run("identity", 1, 0.984), _run("relu", 1, 0.988),
            _run("relu", 2, 0.991),  # no identity run at seed 2: not paired
            _run("identity", 3, 0.97, status="diverged"), _run("relu", 3, 0.99)]
    [entry] = ste_ordering(runs, ["lenet5"], [2], ["identity", "relu"])
    assert entry["seeds"] == [0, 1]
    assert entry["mean"] == pytest.approx(((99.0 - 98.5) + (98.8 - 98.4)) / 2)
    assert entry["wins"] == 2 and entry["n"] == 2
    assert entry["paper_diff"] == pytest.approx(99.24 - 98.49)
    [no_paper] = ste_ordering(runs, ["lenet5"], [2], ["identity", "relu"], paper=False)
    assert no_paper["paper_diff"] is None


def test_ordering_section_only_with_two_seeds():
    one = ste_ordering([_run("identity", 0, 0.98), _run("relu", 0, 0.99)], ["lenet5"], [2], ["identity", "relu"])
    assert ordering_markdown(one) == ""
    two = ste_ordering([_run("identity", s, 0.98 + s / 1000) for s in (0, 1)]
                       + [_run("relu", s, 0.99 - s / 1000) for s in (0, 1)], ["lenet5"], [2], ["identity", "relu"])
    text = ordering_markdown(two)
    assert "relu - identity" in text and "2/2" in text and "+0.75" in text
    results = {"dataset": "mnist", "models": ["lenet5"], "epochs_scale": 1.0, "cell_epochs": None, "seeds": 2,
               "cells": [], "ordering": two}
    assert "STE ordering, paired over seeds" in table1_markdown(results)
