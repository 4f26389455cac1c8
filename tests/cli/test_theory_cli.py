"""``stelab theory``: the run folder, its report and its claims (small sizes; the defaults are exercised by the
demo)."""

from __future__ import annotations

import json

import pytest

from stelab.cli import main


def test_theory_command_writes_report_results_and_plots(tmp_path, capsys):
    out = tmp_path / "theory"
    code = main(["theory", "--out", str(out), "--quick", "--no-progress", "--m", "4", "--n", "6"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "claims held" in printed
    for name in ("report.md", "results.json", "cosine.png", "descent_random.png", "descent_spurious.png",
                 "figure1.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    ids = {c["id"]: c for c in results["findings"]}
    assert {"closed_vs_mc", "correlation", "spurious_ratio", "descent_monotone", "identity_unstable",
            "figure1"} <= set(ids)
    # the exact identities cannot depend on the small sizes used here
    for key in ("closed_vs_integrated", "correlation", "spurious_identity_norm", "descent_monotone"):
        assert ids[key]["held"], ids[key]
    report = (out / "report.md").read_text()
    assert "## Findings" in report and "![figure 1](figure1.png)" in report


def test_theory_command_rejects_bad_sizes(tmp_path, capsys):
    assert main(["theory", "--out", str(tmp_path / "x"), "--n", "1", "--no-progress"]) == 2
    assert "n >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["theory", "--m", "two"])
