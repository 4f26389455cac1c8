"""Every experiment has one shape: a JsonConfig -> ``run(config, out, progress=True)`` -> results whose
``findings`` say what it found (one word for what were claims, verdicts and a headline)."""

from __future__ import annotations

import inspect

import pytest

from stelab.experiments.card.run import card_findings
from stelab.experiments.reproduce.instability import pair_findings
from stelab.experiments.reproduce.ordering import ordering_findings
from stelab.experiments.shape import EXPERIMENTS, finding, finding_lines
from stelab.io import JsonConfig


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_is_config_run_out_progress(name):
    config_type, run = EXPERIMENTS[name].load()
    assert issubclass(config_type, JsonConfig)
    params = list(inspect.signature(run).parameters.values())
    assert [p.kind for p in params[:3]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3
    assert params[2].name == "progress" and params[2].default is True
    assert all(p.default is not inspect.Parameter.empty for p in params[2:])  # runtime keywords only
    assert params[0].annotation in (config_type.__name__, config_type, f"ex.{config_type.__name__}")


def test_findings_print_whether_they_held():
    results = {"findings": [finding("a", "x rose", True), finding("b", "y fell", False), finding("c", "z is 3")]}
    assert finding_lines(results) == ["[held] x rose", "[NOT HELD] y fell", "[measured] z is 3"]
    assert finding("d", "w", 1)["held"] is True and finding("e", "v")["evidence"] == ""


def test_ordering_findings_agree_with_the_paper_by_sign():
    entry = {"model": "resnet20", "bits": 2, "a": "relu", "b": "clipped_relu", "n": 2, "mean": 30.0, "wins": 2,
             "losses": 0, "p": 0.01, "paper_diff": 40.3}
    (same,) = ordering_findings([entry])
    assert same["held"] is True and "+30.00 points over 2 seed(s) (paper +40.30)" in same["text"]
    (other,) = ordering_findings([{**entry, "mean": -1.0}])
    assert other["held"] is False
    (none,) = ordering_findings([{**entry, "paper_diff": None}])
    assert none["held"] is None
    assert ordering_findings([{**entry, "mean": None}]) == []


def test_instability_findings_hold_when_the_switch_moves_away():
    row = {"bits": 4, "from": "relu", "to": "identity", "start_train_loss": 0.1, "to_train_loss": 0.5,
           "control_train_loss": 0.09}
    (moved,) = pair_findings([row], 1e-5)
    assert moved["held"] is True and "control relu" in moved["evidence"]
    (stayed,) = pair_findings([{**row, "to_train_loss": 0.095}], 1e-5)
    assert stayed["held"] is False


def test_card_findings_state_the_recommendation_and_the_predictors():
    results = {"recommendation": "use clipped_relu", "rule": "accuracy", "ranking": ["clipped_relu", "relu"],
               "ranking_changes_with_retuning": True,
               "predictors": {"fidelity_cosine": {"rho": 0.5, "p_value": 0.4, "n": 4},
                              "two_layer_min_cosine": {"rho": None, "p_value": None, "n": 2}}}
    found = card_findings(results)
    assert [f["id"] for f in found] == ["recommendation", "ranking", "retuning", "predictor:fidelity_cosine"]
    assert found[2]["text"].startswith("retuning the learning rate per STE changes")
