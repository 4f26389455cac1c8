"""``stelab card``: the sections run for built-in, parameterised and user STEs, results are cached per STE and
section (an added STE measures only itself), a failing user STE is reported while the others finish, and the rank
statistics are checked against scipy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from scipy import stats

from stelab import ste as ste_registry
from stelab.cli import main
from stelab.experiments.card import CardConfig, run_card, spearman
from stelab.experiments.card import config as card_config
from stelab.experiments.card import run as card_run

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "results" / "lenet5-mnist-float" / "model.pt"
TINY = {"cosine_points": 4, "starts": 2, "descent_steps": 20, "classify_steps": 20, "fidelity_batches": 2,
        "lenet_epochs": 1, "resnet_epochs": 0, "symmetry_samples": 300}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(card_config.TIER_SIZES, "quick", TINY)


def config(**changes) -> CardConfig:
    base = dict(stes=("leaky_relu(slope=0.1)",), against=("relu",), synthetic=96, lrs=(0.05,),
                lenet_init=str(LENET))
    return CardConfig(**{**base, **changes})


def test_config_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="name at least one STE"):
        CardConfig()
    with pytest.raises(ValueError, match="clipped_relu"):  # an unknown name lists the valid ones
        CardConfig(stes=("clipped_rleu",))
    with pytest.raises(ValueError, match="valid choices"):
        CardConfig(stes=("relu",), tier="huge")
    assert CardConfig(stes=("relu", "identity"), against=("identity",)).all_stes() == ["relu", "identity"]
    with pytest.raises(ValueError, match="levels=15"):  # dsq's cells are the staircase's: 15 at 4 bits, not 3
        CardConfig(stes=("dsq",), bits=4)
    with pytest.raises(ValueError, match="the quick tier runs none"):  # a scale nothing would use
        CardConfig(stes=("relu",), table1_epochs_scale=0.1)


def test_a_card_measures_every_section_and_caches_it(tiny, tmp_path, monkeypatch):
    out = tmp_path / "card"
    results = run_card(config(against=("relu", "clipped_relu")), out, progress=False)
    assert set(results["stes"]) == {"leaky_relu(slope=0.1)", "relu", "clipped_relu"}
    assert sorted(results["ranking"]) == sorted(results["stes"])
    for label, sections in results["stes"].items():
        for name in ("what", "two_layer", "symmetry", "classify", "fidelity", "fidelity_end"):
            assert "error" not in sections[name], (label, name, sections[name])
        assert sections["train"]["best_lr"] == 0.05 and 0 <= sections["train"]["best_accuracy"] <= 1
    assert results["stes"]["relu"]["symmetry"]["keeps_symmetry"]  # scale invariant: exactly the same gradient
    assert results["stes"]["relu"]["what"]["path"] == "fused"
    assert (out / "report.md").read_text().startswith("# STE report card: `leaky_relu(slope=0.1)`")
    assert (out / "card.png").stat().st_size > 0
    # adding an STE measures it alone: every cached cell of the others is read back, not recomputed
    calls = []

    def counted(name, fn):
        def section(label, cfg):
            calls.append((name, label))
            return fn(label, cfg)
        return section

    monkeypatch.setattr(card_run, "SECTIONS", {k: counted(k, f) for k, f in card_run.SECTIONS.items()})
    monkeypatch.setattr(card_run, "train_cell", lambda label, *a: calls.append(("train", label))
                        or {"status": "finished", "test_acc": 0.5})
    monkeypatch.setattr(card_run, "fidelity", lambda label, *a: calls.append(("fidelity_end", label))
                        or {"cosine": 0.5, "coarse_norm": 1.0})
    again = run_card(config(stes=("leaky_relu(slope=0.1)", "identity"), against=("relu", "clipped_relu")), out,
                     progress=False)
    assert {label for _, label in calls} == {"identity"}
    assert again["stes"]["relu"] == results["stes"]["relu"]


def test_a_failing_user_ste_is_reported_and_the_others_finish(tiny, tmp_path):
    ste_registry.register("nan_after_start", lambda x, top: torch.where(x > 2, float("nan"), 1.0) * torch.ones_like(x),
                          monotone=True, zero_below=False, scale_invariant=False, overwrite=True)
    try:
        results = run_card(config(stes=("nan_after_start",)), tmp_path / "c", progress=False)
    finally:
        ste_registry.unregister("nan_after_start")
    bad = results["stes"]["nan_after_start"]
    assert any("error" in part for part in bad.values() if isinstance(part, dict))
    assert all("error" not in results["stes"]["relu"][k] for k in ("two_layer", "classify", "fidelity"))
    assert "## What failed" in (tmp_path / "c" / "report.md").read_text()


def test_spearman_against_scipy_and_the_exact_permutation_p_value():
    x, y = [0.1, 0.5, 0.3, 0.9, 0.7], [1.0, 3.0, 2.5, 4.0, 2.0]
    assert spearman(x, y)["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    # n = 4, a perfect ordering: 2 of the 24 pairings (it and its reverse) have |rho| = 1
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40])["p_value"] == pytest.approx(2 / 24)
    assert spearman([1, 2], [1, 2])["rho"] is None


def test_cli(tiny, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["card", "relu", "--against", "identity", "--synthetic", "96", "--lrs", "0.05", "--lenet-init", str(LENET),
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "stelab card: Use " in printed and "ranking: " in printed
    assert main(["card", "relu", "--lenet-init", str(tmp_path / "none.pt"), "--synthetic", "8"]) == 2
    assert "no float LeNet-5 checkpoint" in capsys.readouterr().err


def test_a_redefined_ste_is_measured_again_not_read_from_the_cache(tiny, tmp_path):
    """The cache is keyed by the STE's label and a fingerprint of its mu': a user's edited STE is remeasured."""
    ste_registry.register("edited", lambda x, top: (x > 0).to(x.dtype), monotone=True, zero_below=True,
                          scale_invariant=True, overwrite=True)
    try:
        first = run_card(config(stes=("edited",), against=()), tmp_path / "c", progress=False)
        ste_registry.register("edited", lambda x, top: 0.5 * (x > 0).to(x.dtype), monotone=True, zero_below=True,
                              scale_invariant=True, overwrite=True)
        second = run_card(config(stes=("edited",), against=()), tmp_path / "c", progress=False)
    finally:
        ste_registry.unregister("edited")
    # halving mu' shrinks the coarse gradient (through every quantized layer): a new measurement, in a new cell
    assert second["stes"]["edited"]["fidelity"]["coarse_norm"] < first["stes"]["edited"]["fidelity"]["coarse_norm"]
    assert len(list((tmp_path / "c" / "cache" / "fidelity").glob("edited-*.json"))) == 2


def test_the_standard_tier_adds_resnet20_and_ranks_by_it(monkeypatch, tmp_path):
    sizes = {**TINY, "resnet_epochs": 1}
    monkeypatch.setitem(card_config.TIER_SIZES, "standard", sizes)
    resnet = ROOT / "results" / "table1-cifar10-resnet20" / "seed0" / "float" / "model.pt"
    if not resnet.is_file():
        pytest.skip("no committed ResNet-20 float checkpoint")
    results = run_card(config(tier="standard", synthetic=64, resnet_init=str(resnet)), tmp_path / "s",
                       progress=False)
    for s in results["stes"].values():
        assert "error" not in s["fidelity_resnet20"], s["fidelity_resnet20"]
        assert s["train_resnet20"]["best_lr"] == 0.05
    assert "ResNet-20 / CIFAR-10" in results["rule"]
    assert "6. ResNet-20 best (lr)" in (tmp_path / "s" / "report.md").read_text()
    # ranked by ResNet-20: its fidelity and the LeNet-5 training join the cheap measures that may predict it
    assert {"fidelity_cosine_resnet20", "lenet5_best_accuracy"} <= set(results["predictors"])
    assert results["predictors"]["fidelity_cosine_resnet20"]["n"] == len(results["stes"])
    # synthetic images: no first-1,000 accuracy; a cell cached without one gets it from its run folder on a rerun
    assert all("best_accuracy_first1000" not in s["train_resnet20"] for s in results["stes"].values())
    seen = []
    monkeypatch.setattr(card_run, "first_1000", lambda run_dir, summary: seen.append(run_dir.name) or
                        {"test_acc_first1000": 0.25 if summary.get("status") == "finished" else None})
    again = run_card(config(tier="standard", synthetic=64, resnet_init=str(resnet)), tmp_path / "s", progress=False)
    assert sorted(seen) == sorted(p.name for p in (tmp_path / "s" / "train_resnet20").iterdir())  # no LeNet-5
    assert all(s["train_resnet20"]["best_accuracy_first1000"] == 0.25 for s in again["stes"].values())
    assert "; first 1,000: 25.0 %" in (tmp_path / "s" / "report.md").read_text()


def test_the_best_rate_is_chosen_on_all_test_images_and_reports_the_first_1000_there():
    cells = [{"lr": 0.1, "seed": 0, "status": "finished", "test_acc": 0.70, "test_acc_first1000": 0.80},
             {"lr": 0.01, "seed": 0, "status": "finished", "test_acc": 0.60, "test_acc_first1000": 0.90},
             {"lr": 0.1, "seed": 1, "status": "finished", "test_acc": 0.72, "test_acc_first1000": 0.84}]
    summary = card_run.training_summary(cells, config(lrs=(0.01, 0.1)))
    assert summary["best_lr"] == 0.1 and summary["best_accuracy"] == pytest.approx(0.71)
    assert summary["best_accuracy_first1000"] == pytest.approx(0.82)
    assert "best_accuracy_first1000" not in card_run.training_summary(
        [{k: v for k, v in c.items() if k != "test_acc_first1000"} for c in cells], config(lrs=(0.01, 0.1)))


def test_a_folder_answers_only_for_its_own_configuration(tiny, tmp_path, monkeypatch):
    """The cache of a folder holds one tier, bits, data and checkpoints: a rerun that changes them is refused before
    anything runs (the card's form of the resume rule), one that adds STEs, seeds or rates is not."""
    out = tmp_path / "card"
    monkeypatch.setattr(card_run, "SECTIONS", {k: (lambda label, cfg: {"x": 1.0}) for k in card_run.SECTIONS})
    monkeypatch.setattr(card_run, "train_cell", lambda *a: {"status": "finished", "test_acc": 0.5})
    monkeypatch.setattr(card_run, "fidelity", lambda *a: {"cosine": 0.5, "coarse_norm": 1.0})
    import stelab.experiments.card.report as card_report

    monkeypatch.setattr(card_report, "write_report", lambda *a: None)
    run_card(config(), out, progress=False)
    with pytest.raises(ValueError, match=r"another configuration \(bits: 2 -> 4; synthetic: 96 -> 64\)"):
        run_card(config(bits=4, synthetic=64), out, progress=False)
    run_card(config(stes=("leaky_relu(slope=0.1)", "identity"), lrs=(0.05, 0.1), seeds=2), out, progress=False)
    assert card_config.differences({"tier": "quick"}, CardConfig(stes=("relu",))) == []  # absent: the default


def test_the_full_tier_runs_table1_cells_through_the_table1_experiment(monkeypatch, tmp_path):
    """Section 7: each STE's Table 1 cells, trained by the table1 experiment's own run (tiny schedule here)."""
    monkeypatch.setitem(card_config.TIER_SIZES, "full", {**TINY, "lenet_epochs": 1, "table1": 1})
    monkeypatch.setattr(card_run, "train_cell", lambda *a: {"status": "finished", "test_acc": 0.5})
    monkeypatch.setattr(card_run, "fidelity", lambda *a: {"cosine": 0.5, "coarse_norm": 1.0})
    results = run_card(config(tier="full", table1_epochs_scale=0.02, synthetic=64), tmp_path / "card",
                       progress=False)
    for label in ("leaky_relu(slope=0.1)", "relu"):
        cells = results["stes"][label]["table1"]
        assert sorted(cells) == ["lenet5 2-bit", "lenet5 4-bit", "resnet20 2-bit", "resnet20 4-bit"]
        assert all(0 <= v <= 100 for v in cells.values())
    assert (tmp_path / "card" / "table1-cifar10" / "resnet20" / "seed0" / "2bit-relu" / "results.json").is_file()
    assert "7. Table 1 resnet20 4-bit (%)" in (tmp_path / "card" / "report.md").read_text()


def test_the_standard_tier_classifies_mnist_too(monkeypatch, shared_data_dir):
    """Section 4 in the standard tier: the same two-layer classifier, also on real MNIST (a test accuracy)."""
    from stelab.experiments.card import sections

    monkeypatch.setitem(card_config.TIER_SIZES, "standard", {**TINY, "classify_mnist": 500})
    part = sections.classify("relu", config(tier="standard", synthetic=0, data_dir=str(shared_data_dir)))
    assert 0.5 < part["mnist_test_accuracy"] <= 1.0  # 500 images, one epoch: well above chance (0.1)
    assert "mnist_test_accuracy" not in sections.classify("relu", config())  # quick tier: synthetic only


class Recording:
    """The in-process executor, recording the run folders it was given (the protocol, nothing else)."""

    def __init__(self):
        from stelab.executors import InlineExecutor

        self.inner, self.keys = InlineExecutor(), []
        self.name, self.slots, self.in_process, self.retries = "recording", 1, True, 0

    def submit(self, tasks):
        self.keys += [t.key for t in tasks]
        return self.inner.submit(tasks)

    def wait(self, handles):
        return self.inner.wait(handles)

    def cancel(self, handles):
        self.inner.cancel(handles)

    def close(self):
        self.inner.close()


def test_the_training_cells_run_on_the_executor_given_and_only_once(tiny, tmp_path):
    """Section 6 goes through the executors' graph: each uncached cell is one task named by its run folder, a rerun
    submits nothing, and an added rate submits only its cells."""
    out, first = tmp_path / "card", Recording()
    run_card(config(), out, progress=False, executor=first)
    assert sorted(Path(k).relative_to(out).parts[0] for k in first.keys) == ["train", "train"]
    assert all((Path(k) / "results.json").is_file() for k in first.keys)
    again = Recording()
    run_card(config(), out, progress=False, executor=again)
    assert again.keys == []
    more = Recording()
    results = run_card(config(lrs=(0.05, 0.1)), out, progress=False, executor=more)
    assert sorted(Path(k).name.split("-lr")[1] for k in more.keys) == ["0.1-seed0", "0.1-seed0"]
    assert set(results["stes"]["relu"]["train"]["accuracy_by_lr"]) == {"0.05", "0.1"}


def test_jobs_train_the_cells_in_worker_processes(tiny, tmp_path, monkeypatch):
    """``jobs=2``: the cells train in a pool of two spawned processes (which see none of this process's state: the
    real quick sizes, on 96 synthetic images), and a rerun with one job reads them from the cache."""
    out = tmp_path / "card"
    results = run_card(config(jobs=2), out, progress=False)
    cells = results["stes"]["relu"]["train"]["cells"]
    assert [c["status"] for c in cells] == ["finished"] and 0 <= cells[0]["test_acc"] <= 1
    monkeypatch.setattr(card_run, "train_cell", lambda *a: pytest.fail("a cached cell was trained again"))
    assert run_card(config(jobs=1), out, progress=False)["stes"]["relu"]["train"]["cells"] == cells
