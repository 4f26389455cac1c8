"""Table 1 and instability experiments are configs that round-trip to JSON and reject bad values up front."""

import pytest

from stelab.experiments.reproduce import InstabilityConfig, Table1Config
from stelab.train import TrainConfig


def test_table1_config_round_trips_and_fills_defaults():
    train = TrainConfig(model="resnet20", dataset="cifar10", precision="bf16", lr_schedule="cosine")
    config = Table1Config(dataset="cifar10", bits=(2,), cell_epochs=15, train=train)
    assert config.models == ("vgg11", "resnet20")  # the paper's models for the data set
    again = Table1Config.from_json(config.to_json())
    assert again == config and again.train.precision == "bf16"


def test_table1_config_builds_the_float_run_and_its_cells(tmp_path):
    config = Table1Config(dataset="mnist", bits=(2, 4), stes=("relu", "clipped_relu"), epochs_scale=0.1,
                          cell_epochs=3)
    float_run, cells = config.runs(tmp_path, "lenet5", seed=1)
    assert float_run.quant is None and float_run.epochs == 5 and float_run.seed == 1
    assert [(c.quant.bits, c.quant.ste) for c in cells] == [(2, "relu"), (2, "clipped_relu"), (4, "relu"),
                                                            (4, "clipped_relu")]
    assert all(c.init == float_run.out and c.epochs == 3 for c in cells)
    assert cells[0].out == str(tmp_path / "lenet5" / "seed1" / "2bit-relu")
    assert {c.precision for c in cells} == {"fp32"}  # the float run's


def test_table1_cell_precision_changes_the_cells_only(tmp_path):
    train = TrainConfig(model="vgg11", dataset="cifar10", precision="bf16")
    config = Table1Config(dataset="cifar10", models=("vgg11",), bits=(2,), stes=("relu",), cell_precision="fp32",
                          train=train)
    float_run, cells = config.runs(tmp_path, "vgg11", seed=0)
    assert float_run.precision == "bf16" and [c.precision for c in cells] == ["fp32"]
    assert Table1Config.from_json(config.to_json()) == config


@pytest.mark.parametrize("fields, message", [
    ({"dataset": "imagenet"}, "valid choices"),
    ({"seeds": 0}, "seeds >= 1"),
    ({"cell_epochs": 0}, "cell_epochs"),
    ({"cell_precision": "fp16"}, "cell_precision.*valid choices"),
    ({"stes": ("nope",)}, None),
    ({"dataset": "cifar10", "train": TrainConfig()}, "train.dataset"),
])
def test_table1_config_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        Table1Config(**fields)


def test_instability_config_round_trips_and_checks_pairs():
    config = InstabilityConfig(pairs=((4, "relu", "identity"),), switch_epochs=2, then_epochs=1, epochs_scale=0.1)
    assert InstabilityConfig.from_json(config.to_json()) == config
    assert config.train.epochs == 5 and config.train.model == "lenet5"
    with pytest.raises(ValueError, match="valid"):
        InstabilityConfig(pairs=((4, "relu", "idnetity"),))
    with pytest.raises(ValueError, match="then_epochs"):
        InstabilityConfig(then_epochs=-1)


def test_a_partial_sweep_plots_only_the_bit_widths_with_cells(tmp_path, monkeypatch):
    """A 4-bit row none of whose cells has trained gets no (empty) panels; the 2-bit row shows its cell and float."""
    import matplotlib.pyplot as plt

    from stelab.experiments.reproduce import table1
    from stelab.io import append_jsonl

    def epochs(run, n):
        run.mkdir(parents=True)
        for e in range(1, n + 1):
            append_jsonl(run / "metrics.jsonl", {"kind": "epoch", "epoch": e, "train_loss": 1.0 / e, "test_acc": 0.5})

    epochs(table1.float_dir(tmp_path, "lenet5", 0), 3)
    epochs(table1.cell_dir(tmp_path, "lenet5", 0, 2, "relu"), 2)
    shapes = []
    monkeypatch.setattr(table1, "save_figure", lambda fig, path: shapes.append(len(fig.axes)) or plt.close(fig) or path)
    assert table1.plot_model_curves(tmp_path, "lenet5", (2, 4), ("identity", "relu")) is not None
    assert shapes == [2]  # one row of two panels: 2 bits only
