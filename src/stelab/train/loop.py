"""The training loop: SGD with momentum, step-decayed rate, whole-data-set-on-device batches, DDP, resume.

Per epoch, rank 0 appends ``{"kind": "epoch", train_loss, train_acc, test_loss, test_acc, lr, time_s, ...}`` to
``metrics.jsonl`` and writes ``checkpoint.pt`` atomically. ``train_loss``/``train_acc`` are the averages over the
epoch's mini-batches as they were trained on (the running figures; the paper's "training loss"). A non-finite loss
stops the run at the step where it appears (``status: "diverged"``); the last good checkpoint stays.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..io import append_jsonl, read_json, read_jsonl, write_json, write_text
from . import distributed
from .checkpoint import BEST, CHECKPOINT, load_checkpoint, load_weights, save_checkpoint, set_rng_state, unwrap
from .config import TrainConfig
from .runs import CONFIG, METRICS, build_model, is_done, plot_curves, read_summary, write_summary

# Fields that may differ between a run and its resumption: they change speed or logging, not the result.
RUNTIME_FIELDS = ("out", "device", "compile", "data_dir", "diagnose_every", "eval_batch_size", "save_best")


class Diverged(Exception):
    """A non-finite training loss."""


def resolve_device(name: str, info: distributed.DistInfo) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; valid choices here: auto, cpu")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank)


def run_dir_for(config: TrainConfig) -> Path:
    return Path(config.out) if config.out else Path("runs") / config.run_name()


def load_split(config: TrainConfig, split: str) -> tuple[Tensor, Tensor]:
    from .. import data

    if config.synthetic:
        n = config.synthetic if split == "train" else max(1, config.synthetic // 4)
        images, labels = data.synthetic(config.dataset, n, seed=config.seed + (split == "test"))
    else:
        images, labels = data.load(config.dataset, config.data_dir, split=split)
    limit = config.limit_train if split == "train" else config.limit_test
    return (images[:limit], labels[:limit]) if limit else (images, labels)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int, info: distributed.DistInfo,
             channels_last: bool = False, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole set; ranks take interleaved shares and sum."""
    was_training = model.training
    model.eval()
    x, y = x[info.rank::info.world_size], y[info.rank::info.world_size]
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss sum, correct, count
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, precision):
            out = model(xb)
        sums[0] += nn.functional.cross_entropy(out.float(), yb, reduction="sum").double()
        sums[1] += (out.argmax(1) == yb).sum()
        sums[2] += len(yb)
    distributed.all_reduce_sum(sums)
    model.train(was_training)
    n = max(sums[2].item(), 1.0)
    return sums[0].item() / n, sums[1].item() / n


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Step decay at the milestones, or a cosine from the initial rate to 0 over the run (stepped per epoch)."""
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.resolved_epochs())
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, config.milestone_epochs(), config.lr_gamma)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for ``precision="bf16"`` (bfloat16 autocast on CPU and CUDA); a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    saved = read_json(run_dir / CONFIG)
    new = config.to_dict()
    diff = sorted(k for k in new if k not in RUNTIME_FIELDS and _jsonable(saved.get(k)) != _jsonable(new[k]))
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {new[k]!r}" for k in diff)
        raise ValueError(f"--resume with a different configuration than {run_dir / CONFIG} ({details}); "
                         "resume with the same flags or start a new --out folder")


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def train(config: TrainConfig, hooks: Iterable = (), *, resume: bool = False, progress: bool = True) -> dict:
    """Train one model per ``config``; returns the summary (also written to ``results.json``).

    ``hooks``: objects with an int ``every`` and ``__call__(*, step, epoch, model, inputs, targets, loss_fn)``,
    called on rank 0 after every ``every``-th optimizer step; a returned dict becomes a ``"kind": "hook"`` record.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) this is one rank of a DistributedDataParallel job.
    """
    info = distributed.from_env()
    device = resolve_device(config.device, info)
    distributed.init(info, device)
    try:
        return _train(config, list(hooks), info, device, resume, progress)
    finally:
        distributed.shutdown()


def _train(config: TrainConfig, hooks: list, info: distributed.DistInfo, device: torch.device, resume: bool,
           progress: bool) -> dict:
    from .. import data

    run_dir = run_dir_for(config)
    ckpt_path = run_dir / CHECKPOINT
    if config.batch_size % info.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {info.world_size} processes")
    if resume and (run_dir / CONFIG).is_file():
        _check_resume_config(run_dir, config)
        if is_done(run_dir):
            if info.is_main:
                print(f"{run_dir} already finished; nothing to resume", file=sys.stderr)
            return read_summary(run_dir)  # type: ignore[return-value]
    elif not resume and (ckpt_path.is_file() or is_done(run_dir)):
        # Only a trained epoch blocks a fresh start: a start that failed before its first checkpoint has nothing
        # to lose and must not block the corrected re-run.
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if config.diagnose_every:
        hooks = [*hooks, _diagnostics_hook(config.diagnose_every)]

    torch.manual_seed(config.seed)
    model = build_model(config)
    if config.init:
        load_weights(model, config.init)
    model.to(device)
    channels_last = config.resolved_channels_last(device.type)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    epochs, lr = config.resolved_epochs(), config.resolved_lr()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    scheduler = make_scheduler(optimizer, config)

    mean, std = data.STATS[config.dataset]
    train_x, train_y = load_split(config, "train")
    test_x, test_y = load_split(config, "test")
    loader = data.DeviceLoader(train_x, train_y, batch_size=config.batch_size // info.world_size, shuffle=True,
                               augment=config.resolved_augment(), mean=mean, std=std, device=device,
                               seed=config.seed, rank=info.rank, world_size=info.world_size,
                               channels_last=channels_last)
    test_x, test_y = data.normalise(test_x.to(device), mean, std), test_y.to(device)

    start_epoch, step, elapsed, best = 0, 0, 0.0, None
    if resume and ckpt_path.is_file():
        blob = load_checkpoint(ckpt_path, map_location=device)
        unwrap(model).load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
        set_rng_state(blob["rng"])
        start_epoch, step, best = blob["epoch"], blob["step"], blob.get("best")
        elapsed = float(blob.get("elapsed_s", 0.0))
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config.to_dict())
        # Records past the checkpoint belong to the interrupted epoch, which is trained again.
        kept = [r for r in read_jsonl(run_dir / METRICS) if r.get("epoch", 0) <= start_epoch]
        write_text(run_dir / METRICS, "".join(_jsonl(r) for r in kept))

    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    loss_fn = nn.CrossEntropyLoss()
    # On a GPU every .item() is a sync; there the loss is checked every few steps instead of every step.
    check_every = 1 if device.type == "cpu" else 25
    status, t_start = "finished", time.perf_counter() - elapsed

    for epoch in range(start_epoch + 1, epochs + 1):
        loader.set_epoch(epoch)
        net.train()
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        t0 = time.perf_counter()
        bar = _progress_bar(len(loader), epoch, epochs, enabled=progress and info.is_main)
        try:
            for i, (xb, yb) in enumerate(loader):
                with autocast(device, config.precision):
                    out = net(xb)
                    loss = loss_fn(out, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                sums[0] += loss.detach().double() * len(yb)
                sums[1] += (out.detach().argmax(1) == yb).sum()
                sums[2] += len(yb)
                if (step % check_every == 0 or i == len(loader) - 1) and distributed.any_rank(
                        not torch.isfinite(sums[0]).item(), device):
                    raise Diverged(f"non-finite training loss at step {step} (epoch {epoch})")
                if info.is_main:
                    for hook in hooks:
                        if step % hook.every == 0:
                            out_rec = hook(step=step, epoch=epoch, model=unwrap(model), inputs=xb, targets=yb,
                                           loss_fn=loss_fn)
                            if out_rec:
                                append_jsonl(run_dir / METRICS, {"kind": "hook", "step": step, "epoch": epoch,
                                                                 **out_rec})
                if bar is not None:
                    bar.update(1)
                    if i % 20 == 0 or i == len(loader) - 1:
                        s = sums.tolist()
                        bar.set_postfix(loss=f"{s[0] / s[2]:.4f}", acc=f"{100 * s[1] / s[2]:.2f}%",
                                        img_s=f"{s[2] * info.world_size / (time.perf_counter() - t0):.0f}")
        except Diverged as err:
            status = "diverged"
            if info.is_main:
                print(f"{run_dir}: {err}; stopping, last good checkpoint kept", file=sys.stderr)
                append_jsonl(run_dir / METRICS, {"kind": "diverged", "step": step, "epoch": epoch})
            break
        finally:
            if bar is not None:
                bar.close()
        distributed.all_reduce_sum(sums)
        train_time = time.perf_counter() - t0
        # The plain model: DDP's forward would broadcast buffers, a collective the ranks' unequal shares could hang.
        test_loss, test_acc = evaluate(model, test_x, test_y, config.eval_batch_size, info, channels_last,
                                      config.precision)
        record = {"kind": "epoch", "epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                  "train_loss": sums[0].item() / sums[2].item(), "train_acc": sums[1].item() / sums[2].item(),
                  "test_loss": test_loss, "test_acc": test_acc, "time_s": time.perf_counter() - t0,
                  "images_per_s": sums[2].item() / train_time}
        scheduler.step()
        if info.is_main:
            append_jsonl(run_dir / METRICS, record)
            if config.save_best and (best is None or test_acc > best["test_acc"]):
                best = {"epoch": epoch, "test_acc": test_acc}
                save_checkpoint(run_dir / BEST, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                                step=step, config=config.to_dict(), best=best)
            save_checkpoint(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                            step=step, config=config.to_dict(), best=best,
                            elapsed_s=time.perf_counter() - t_start)
        distributed.barrier()

    summary = _summary(run_dir, config, status, step, time.perf_counter() - t_start, info)
    if info.is_main:
        write_summary(run_dir, summary)
        plot_curves(run_dir)
    return summary


def _summary(run_dir: Path, config: TrainConfig, status: str, step: int, wall: float,
             info: distributed.DistInfo) -> dict[str, Any]:
    records = [r for r in read_jsonl(run_dir / METRICS) if r.get("kind") == "epoch"] if info.is_main else []
    last = records[-1] if records else {}
    summary: dict[str, Any] = {
        "status": status, "run": run_dir.name, "model": config.model, "dataset": config.dataset,
        "bits": config.bits, "ste": config.ste if config.quantized else "float", "seed": config.seed,
        "epochs": config.resolved_epochs(), "epochs_done": last.get("epoch", 0), "steps": step,
        "processes": info.world_size, "wall_time_s": wall,
    }
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        summary[key] = last.get(key)
    if records:
        summary["best_test_acc"] = max(r["test_acc"] for r in records)
        summary["images_per_s"] = sum(r["images_per_s"] for r in records) / len(records)
    return summary


def _jsonl(record: dict) -> str:
    import json

    from ..io import _json_safe

    return json.dumps(_json_safe(record), allow_nan=False) + "\n"


def _progress_bar(total: int, epoch: int, epochs: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
                mininterval=0.1 if interactive else 30.0, file=sys.stderr)


def _diagnostics_hook(every: int):
    try:
        from ..diagnostics import DiagnosticsHook
    except ImportError as err:
        raise ValueError(f"--diagnose-every needs stelab.diagnostics.DiagnosticsHook, which is unavailable ({err}); "
                         "use --diagnose-every 0") from None
    return DiagnosticsHook(every=every)
