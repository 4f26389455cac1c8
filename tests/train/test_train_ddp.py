"""DistributedDataParallel with 2 CPU processes (gloo) through ``stelab train --nproc 2``.

What is asserted: the 2-process run finishes and checkpoints, and its weights equal (to float tolerance) an
in-process simulation of the same data-parallel step -- rank r's slice of each epoch's permutation, per-rank
batch-norm statistics (as DDP computes them), gradients averaged over the ranks, the running BN buffers of rank 0
(DDP broadcasts them from rank 0 before every forward) -- so the DDP path computes exactly the intended update.
It does not equal single-process training with the same global batch, because batch norm sees the per-rank half
batches, not the global batch.
"""

from __future__ import annotations

import torch
from torch import nn

from stelab import data
from stelab.activations.config import QuantConfig
from stelab.cli import main
from stelab.io import read_json
from stelab.train import TrainConfig, load_checkpoint
from stelab.train.runs import build_model

CONFIG = TrainConfig(model="lenet5", dataset="mnist", synthetic=256, batch_size=64, epochs=2,
                     quant=QuantConfig(bits=2, ste="clipped_relu"), lr=0.05, seed=3)


def simulate_two_ranks(config: TrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(config.seed)
    model = build_model(config)
    opt = torch.optim.SGD(model.parameters(), lr=config.resolved_lr(), momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, config.milestone_epochs(), config.lr_gamma)
    images, labels = data.synthetic("mnist", config.synthetic, seed=config.seed)
    mean, std = data.STATS["mnist"]
    loaders = [data.DeviceLoader(images, labels, batch_size=config.batch_size // 2, shuffle=True, augment=False,
                                 mean=mean, std=std, seed=config.seed, rank=r, world_size=2) for r in range(2)]
    loss_fn = nn.CrossEntropyLoss()
    replica = build_model(config)
    for epoch in range(1, config.resolved_epochs() + 1):
        for loader in loaders:
            loader.set_epoch(epoch)
        for (x0, y0), (x1, y1) in zip(*loaders):
            replica.load_state_dict(model.state_dict())  # rank 1: same weights and broadcast buffers
            grads = []
            for net, x, y in ((model, x0, y0), (replica, x1, y1)):
                net.zero_grad(set_to_none=True)
                loss_fn(net(x), y).backward()
                grads.append([p.grad for p in net.parameters()])
            for p, g0, g1 in zip(model.parameters(), *grads):
                p.grad = g0 / 2 + g1 / 2
            opt.step()
        sched.step()
    return model.state_dict()


def test_two_process_ddp_trains_checkpoints_and_matches_the_simulated_update(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ddp"
    argv = ["train", "--nproc", "2", "--model", "lenet5", "--dataset", "mnist", "--synthetic", "256",
            "--batch-size", "64", "--epochs", "2", "--bits", "2", "--ste", "clipped_relu", "--lr", "0.05",
            "--seed", "3", "--out", str(out), "--no-progress"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by the launched ranks
    assert main(argv) == 0  # the parent only launches the two ranks (subprocesses)
    assert "status=finished epochs_done=2" in capsys.readouterr().out  # and prints the run's summary, as without
    summary = read_json(out / "results.json")
    assert summary["status"] == "finished" and summary["processes"] == 2
    assert summary["steps"] == 2 * (256 // 64)  # 4 global steps per epoch
    blob = load_checkpoint(out / "checkpoint.pt")
    assert blob["epoch"] == 2 and not any(k.startswith("module.") for k in blob["model"])
    expected = simulate_two_ranks(CONFIG.replace(out=str(out)))
    for key, value in expected.items():
        torch.testing.assert_close(blob["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
