"""``stelab compare``: McNemar's paired test checked against an independent computation, and the command end to end
on small synthetic runs (same test images paired, other images refused before anything is written)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab.cli import main
from stelab.experiments.compare import CompareConfig, evaluate, mcnemar
from stelab.io import read_json
from stelab.train import TrainConfig, train
from stelab.train.evaluation import right_on_test


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=300))
def test_mcnemar_matches_an_enumeration_and_the_variance_of_the_differences(pairs):
    base = torch.tensor([p[0] for p in pairs])
    other = torch.tensor([p[1] for p in pairs])
    m = mcnemar(base, other)
    b = sum(x and not y for x, y in pairs)
    c = sum(y and not x for x, y in pairs)
    assert (m["b"], m["c"], m["n"]) == (b, c, len(pairs))
    tail = sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c)
    assert m["p"] == pytest.approx(min(1.0, 2 * tail), rel=1e-9)
    d = other.double().numpy() - base.double().numpy()  # per image: +1, 0 or -1
    assert m["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert m["se_paired"] == pytest.approx(d.std() / np.sqrt(len(d)), abs=1e-12)


def test_mcnemar_on_a_known_case_and_bad_input():
    base = torch.tensor([True] * 90 + [False] * 10)
    other = torch.tensor([True] * 80 + [False] * 10 + [True] * 10)  # b = 10, c = 10: no evidence either way
    m = mcnemar(base, other)
    assert (m["b"], m["c"], m["diff"], m["z"], m["p"]) == (10, 10, 0.0, 0.0, 1.0)
    m = mcnemar(torch.zeros(50, dtype=torch.bool), torch.ones(50, dtype=torch.bool))  # c = 50, b = 0
    assert m["p"] == pytest.approx(2 * 0.5 ** 50) and m["z"] == pytest.approx(math.sqrt(50))
    with pytest.raises(ValueError, match="equal-length"):
        mcnemar(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    base = TrainConfig(model="lenet5", synthetic=512, batch_size=64, epochs=1, quant=None, out=str(root / "float"))
    train(base, progress=False)
    train(base.replace(lr=0.02, out=str(root / "slower")), progress=False)
    train(base.replace(seed=1, out=str(root / "seed1")), progress=False)
    return root


def test_the_shared_evaluation_agrees_with_the_runs_own_and_with_any_batch(runs):
    """``right_on_test`` (behind compare and Table 1's first-1,000 accuracy) recounts what training recorded."""
    right, images, labels = right_on_test(runs / "slower")
    assert right.dtype == torch.bool and len(right) == len(labels) == len(images) == 128
    assert float(right.float().mean()) == pytest.approx(read_json(runs / "slower" / "results.json")["test_acc"])
    assert torch.equal(right_on_test(runs / "slower", batch=7)[0], right)


def test_the_command_pairs_runs_on_the_same_images(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert f"evaluating {runs / 'slower'} (2/2)" in captured.err  # each run named as its evaluation starts
    assert f"wrote {out}/report.md" in printed and "[measured] slower vs the baseline, all (128 images)" in printed
    results = read_json(out / "results.json")
    (comp,) = results["comparisons"]
    base, other = evaluate(runs / "float").right, evaluate(runs / "slower").right
    assert comp["all"]["n"] == 128 and comp["all"]["b"] == int((base & ~other).sum())
    assert comp["all"]["acc_other"] == pytest.approx(float(other.float().mean()))
    assert results["split"] == 0 and "first" not in " ".join(comp)  # mnist: no split unless asked
    assert "McNemar" in (out / "report.md").read_text()
    assert results["curves"] == "curves.png" and (out / "curves.png").stat().st_size > 10_000
    assert "![training curves of the compared runs](curves.png)" in (out / "report.md").read_text()
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--split", "32", "--out",
                 str(tmp_path / "cut")]) == 0
    comp = read_json(tmp_path / "cut" / "results.json")["comparisons"][0]
    assert comp["first 32"]["n"] == 32 and comp["from 32 on"]["n"] == 96
    assert comp["first 32"]["b"] + comp["from 32 on"]["b"] == comp["all"]["b"]


def test_runs_on_other_images_or_too_few_runs_are_refused_and_nothing_is_written(runs, tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(["compare", str(runs / "float"), str(runs / "seed1"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "other test images" in err and "seed for --synthetic runs" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["compare", str(runs / "float"), "--out", str(out)]) == 2
    assert "at least one other" in capsys.readouterr().err and not out.exists()
    assert main(["compare", str(runs / "float"), str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--split", "128", "--out", str(out)]) == 2
    assert "leaves no images after it: the test set has 128" in capsys.readouterr().err and not out.exists()


def test_the_config_round_trips_and_checks_its_fields():
    config = CompareConfig(runs=("a", "b"), split=1000)
    assert CompareConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match=r"split must be an int >= 0 .*\(--split\)"):
        CompareConfig(runs=("a", "b"), split=-1)
    with pytest.raises(ValueError, match="BASELINE RUN"):
        CompareConfig(runs=("a",))
    labelled = CompareConfig(runs=("x/a", "y/a"), labels=("15 epochs", "60 epochs"))
    assert CompareConfig.from_json(labelled.to_json()) == labelled and labelled.names() == ["15 epochs", "60 epochs"]
    assert CompareConfig(runs=("x/a", "y/a")).names() == ["x/a", "y/a"]  # equal folder names told apart
    with pytest.raises(ValueError, match="gives 1 name\\(s\\) for 2 runs; give one per run"):
        CompareConfig(runs=("a", "b"), labels=("one",))
    with pytest.raises(ValueError, match="distinct and not empty"):
        CompareConfig(runs=("a", "b"), labels=("same", "same"))


def test_labels_name_the_runs_in_the_report_the_findings_and_the_legend(runs, tmp_path, capsys):
    out = tmp_path / "named"
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--labels", "fast start", "slow start",
                 "--out", str(out), "--no-progress"]) == 0
    assert "[measured] slow start vs the baseline, all (128 images)" in capsys.readouterr().out
    results = read_json(out / "results.json")
    assert results["baseline_label"] == "fast start" and results["comparisons"][0]["label"] == "slow start"
    report = (out / "report.md").read_text()
    assert "Baseline (fast start):" in report and f"- slow start (`{runs / 'slower'}`)" in report
    assert "| slow start | all | 128 |" in report
    assert read_json(out / "config.json")["labels"] == ["fast start", "slow start"]
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--labels", "one", "--out",
                 str(tmp_path / "refused")]) == 2
    assert "gives 1 name(s) for 2 runs" in capsys.readouterr().err and not (tmp_path / "refused").exists()


def test_the_first_1000_accuracy_of_the_committed_float_resnet20_is_the_recorded_one(shared_data_dir, monkeypatch):
    """Table 1's first-1,000 figure, through the shared evaluation, on the committed network and the real images:
    the value its summary recorded (91.6 %). bf16 autocast may round a borderline logit otherwise on another CPU,
    hence one image of slack."""
    from stelab.experiments.reproduce.table1 import subset_accuracy

    monkeypatch.setenv("STELAB_DATA", str(shared_data_dir))
    run = Path(__file__).resolve().parents[2] / "results" / "table1-cifar10-resnet20" / "seed0" / "float"
    assert read_json(run / "config.json")["precision"] == "bf16"
    assert subset_accuracy(run, 1000) == pytest.approx(0.916, abs=0.0011)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=70))
def test_the_right_record_round_trips_any_length(tmp_path_factory, flags):
    from stelab.train.evaluation import record_right, recorded_right

    folder = tmp_path_factory.mktemp("record")
    right = torch.tensor(flags)
    record_right(folder, right)
    assert torch.equal(recorded_right(folder), right)


def test_a_folder_kept_without_weights_compares_from_its_record(runs, tmp_path, capsys):
    """The record written when a run is evaluated stands in for its weights: the same numbers as with them."""
    import shutil

    out = tmp_path / "with"
    assert main(["compare", str(runs / "float"), str(runs / "slower"), "--out", str(out)]) == 0
    assert (runs / "slower" / "test_right.json").is_file() and (runs / "float" / "test_right.json").is_file()
    kept = tmp_path / "kept"
    for name in ("float", "slower"):  # what results/ keeps of a run: config, metrics, summary, record
        (kept / name).mkdir(parents=True)
        for f in ("config.json", "metrics.jsonl", "results.json", "test_right.json"):
            shutil.copy(runs / name / f, kept / name / f)
    assert main(["compare", str(kept / "float"), str(kept / "slower"), "--out", str(tmp_path / "without")]) == 0
    (a,), (b,) = (read_json(d / "results.json")["comparisons"] for d in (out, tmp_path / "without"))
    assert a["all"] == b["all"]
    capsys.readouterr()
    (kept / "slower" / "test_right.json").unlink()
    assert main(["compare", str(kept / "float"), str(kept / "slower"), "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "has no weights (checkpoint.pt or model.pt) and no test_right.json" in err and "Traceback" not in err
    assert not (tmp_path / "none").exists()


def test_a_damaged_or_mismatched_record_is_refused_with_its_fix(runs, tmp_path):
    import json
    import shutil

    from stelab.train.evaluation import RIGHT, record_right, recorded_right, right_or_recorded

    evaluate(runs / "slower")
    kept = tmp_path / "kept"
    kept.mkdir()
    for f in ("config.json", "results.json", RIGHT):
        shutil.copy(runs / "slower" / f, kept / f)
    record = json.loads((kept / RIGHT).read_text())
    (kept / RIGHT).write_text(json.dumps({**record, "accuracy": record["accuracy"] + 0.1}))
    with pytest.raises(ValueError, match="does not match its own length and accuracy; delete it"):
        recorded_right(kept)
    (kept / RIGHT).write_text(json.dumps({**record, "right": "not base64!"}))
    with pytest.raises(ValueError, match="is not a test_right record .*delete it and evaluate"):
        recorded_right(kept)
    record_right(kept, recorded_right(runs / "slower")[:40])  # a well-formed record of another split
    with pytest.raises(ValueError, match="covers 40 test images but the run's test split has 128"):
        right_or_recorded(kept)


def test_the_first_1000_accuracy_is_measured_once_and_kept_in_the_summary(tmp_path, monkeypatch):
    """Table 1's first-1,000 figure is kept in the run's results.json, so a folder kept without its weights (as
    results/ keeps them) still reports it; runs on other data sets or unfinished ones get none."""
    from stelab.experiments.reproduce import table1
    from stelab.io import write_json

    calls = []
    monkeypatch.setattr(table1, "subset_accuracy", lambda run_dir, n: calls.append((run_dir, n)) or 0.875)
    summary = {"status": "finished", "dataset": "cifar10", "test_acc": 0.8}
    write_json(tmp_path / "results.json", summary)
    assert table1.with_subset_accuracy(summary, tmp_path)["test_acc_first1000"] == 0.875
    assert calls == [(tmp_path, 1000)]
    assert read_json(tmp_path / "results.json") == {**summary, "test_acc_first1000": 0.875}
    kept = read_json(tmp_path / "results.json")
    assert table1.with_subset_accuracy(kept, tmp_path)["test_acc_first1000"] == 0.875 and len(calls) == 1
    for other in ({**summary, "status": "diverged"}, {**summary, "dataset": "mnist"}):
        assert "test_acc_first1000" not in table1.with_subset_accuracy(other, tmp_path)
    assert len(calls) == 1


def test_curves_need_epoch_records_and_legends_tell_equal_names_apart(runs, tmp_path):
    import shutil

    from stelab.experiments.compare import plot_compared_curves, run_labels

    assert run_labels(["a/seed0/cell", "b/seed0/cell", "b/seed0/other"]) == ["a/seed0/cell", "b/seed0/cell",
                                                                           "b/seed0/other"]
    assert run_labels(["x/float", "x/slower"]) == ["float", "slower"]
    bare = tmp_path / "bare"  # a run folder without metrics.jsonl: nothing to draw
    bare.mkdir()
    for f in ("config.json", "results.json", "checkpoint.pt"):
        shutil.copy(runs / "float" / f, bare / f)
    assert plot_compared_curves([str(bare)], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    out = tmp_path / "cmp"
    assert main(["compare", str(bare), str(bare), "--out", str(out), "--no-progress"]) == 0
    assert read_json(out / "results.json")["curves"] is None and "curves.png" not in (out / "report.md").read_text()
    assert plot_compared_curves([str(bare), str(runs / "slower")], tmp_path / "one.png") == tmp_path / "one.png"
