"""``stelab symmetry``: the run folder, its report and verdicts, and a bad STE name as a one-line error."""

from __future__ import annotations

import json

from stelab.cli import main


def test_cli_writes_a_report(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["symmetry", "--quick", "--steps", "40", "--samples", "500", "--out", str(out), "--no-progress",
            "--stes", "relu", "clipped_relu"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [s["max_analytic_numeric_gap"] < 1e-8 for s in results["stationary"]] == [True] * 3
    assert [f["id"] for f in results["findings"]] == ["symmetry:relu", "symmetry:clipped_relu"]
    assert (out / "symmetry.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "global minimum" in report and "## Findings" in report
    verdicts = {v["ste"]: v for v in results["by_ste"]}
    assert verdicts["clipped_relu"]["global_minimum_ray"].startswith("zero at ‖w‖ = 1.76")
    assert verdicts["relu"]["global_minimum_ray"].startswith("never zero")
    printed = capsys.readouterr().out
    assert "clipped_relu: global-minimum ray zero at" in printed and str(out) in printed
    assert main(["symmetry", "--stes", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert "valid choices" in capsys.readouterr().err
