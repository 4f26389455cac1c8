"""The training loop: SGD with momentum (or BCGD/BinaryRelax around it for quantized weights), step-decayed rate,
whole-data-set-on-device batches, DDP, resume.

Per epoch, rank 0 appends ``{"kind": "epoch", train_loss, train_acc, test_loss, test_acc, lr, time_s, ...}`` to
``metrics.jsonl`` and writes ``checkpoint.pt`` atomically. ``train_loss``/``train_acc`` are the averages over the
epoch's mini-batches as they were trained on (the running figures; the paper's "training loss"). A non-finite loss
stops the run at the step where it appears (``status: "diverged"``); the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..activations import schedule as ste_schedule
from ..errors import ResolutionError
from ..io import append_jsonl, read_jsonl, remove_stale_temporaries, write_json, write_text
from ..pack import PackSaved
from . import distributed, runs
from .checkpoint import BEST, CHECKPOINT, load_checkpoint, save_checkpoint, set_rng_state, unwrap
from .config import (
    RUNTIME_FIELDS,  # noqa: F401  (stelab.train.loop.RUNTIME_FIELDS)
    TrainConfig,
)
from .distill import distill_loss, load_teacher
from .hooks import TrainHook, check_hooks, run_hooks
from .progress import progress_bar, update_bar
from .quant_weights import deployed_weights, wrap_optimizer
from .resolutions import bad_resolutions, healthy, learned_resolutions, optimizer_groups
from .rules import _check_not_orphaned, _check_resume_config, config_differences  # noqa: F401
from .runs import CONFIG, METRICS, SUMMARY, build_model, is_done, plot_curves, read_summary, run_summary, write_summary
from .schedule import make_scheduler, warmup_step


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


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """Mixed precision for ``precision="bf16"`` (bfloat16 autocast on CPU and CUDA); a no-op for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train(config: TrainConfig, hooks: Iterable[TrainHook] = (), *, resume: bool = False,
          progress: bool = True) -> dict:
    """Train one model per ``config``; returns the summary (also written to ``results.json``).

    ``hooks`` follow the protocol of :mod:`stelab.train.hooks` (an int ``every`` and a keyword call after every
    ``every``-th optimizer step on rank 0, whose returned dict is logged); the caller builds them (training knows no
    concrete hook). ``resume`` continues the run in the config's folder from its last checkpoint; ``progress`` shows
    a progress bar. Under ``torchrun`` (``WORLD_SIZE`` > 1) this is one rank of a DistributedDataParallel job.
    """
    hooks = check_hooks(hooks)
    info = distributed.from_env()
    device = resolve_device(config.device, info)
    distributed.init(info, device)
    try:
        return _train(config, hooks, info, device, resume, progress)
    finally:
        distributed.shutdown()


@dataclass
class _Run:
    """One run's pieces, as the steps below build them, and its progress (``epoch``: the last finished one)."""

    config: TrainConfig
    info: distributed.DistInfo
    device: torch.device
    run_dir: Path
    hooks: list[TrainHook]
    progress: bool
    model: nn.Module = field(init=False)
    net: nn.Module = field(init=False)  # what the steps call: the model, wrapped by DDP and/or torch.compile
    channels_last: bool = False
    optimizer: Any = field(init=False)  # torch SGD, or a stelab.weights.optim wrapper around it
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    loader: Any = None
    test: tuple[Tensor, Tensor] = field(init=False)
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)
    epoch: int = 0
    step: int = 0
    warmup_steps: int = 0
    best: dict[str, Any] | None = None
    t_start: float = 0.0  # perf_counter at the start, shifted back by the time of the epochs resumed from
    ste_label: str | None = None  # the STE of this epoch when a parameter is scheduled
    pack: Any = field(default_factory=contextlib.nullcontext)  # around each forward: stelab.PackSaved or nothing
    resolutions: list[Tensor] = field(default_factory=list)  # learned alphas and weight steps, checked with the loss
    teacher: nn.Module | None = None  # the float teacher of --distill


def _train(config: TrainConfig, hooks: list[TrainHook], info: distributed.DistInfo, device: torch.device,
           resume: bool, progress: bool) -> dict:
    run = _Run(config, info, device, run_dir_for(config), hooks, progress)
    finished = _check_start(run, resume)
    if finished is not None:
        return finished
    # The order below is the order the global RNG is used in (seed, weight init); it fixes a run's numbers. The
    # optimizer uses no randomness; it comes after the data because BinaryRelax's schedule needs the steps per epoch.
    _build_model(run)
    _load_data(run)
    if not (resume and (run.run_dir / CHECKPOINT).is_file()):  # a checkpoint holds the resolutions it trained
        _start_resolutions_from_data(run)
    _build_optimizer(run)
    elapsed = _restore(run) if resume else 0.0
    if info.is_main:
        _start_run_folder(run)
    run.net = _wrap(run)
    run.resolutions = learned_resolutions(run.model)
    if config.pack_saved:
        # checks the model once (a model it cannot help is said once)
        run.pack = PackSaved(run.model, recompute=config.recompute, recompute_limit=config.recompute_limit)
    status, run.t_start = "finished", time.perf_counter() - elapsed
    schedules = ste_schedule.parse_all(config.ste_schedule)
    for epoch in range(run.epoch + 1, config.resolved_epochs() + 1):
        at = ste_schedule.progress(epoch, config.resolved_epochs())
        run.ste_label = ste_schedule.apply(run.model, schedules, at)
        if not _train_epoch(run, epoch):
            status = "diverged"
            break
        distributed.barrier()
    return _finish(run, status)


def _check_start(run: _Run, resume: bool) -> dict | None:
    """Refuse what cannot be started or resumed; the saved summary when a resumed run had already finished."""
    config, run_dir = run.config, run.run_dir
    if config.batch_size % run.info.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the {run.info.world_size} processes")
    untrained = not (run_dir / CHECKPOINT).is_file()  # no epoch finished: nothing to lose, nothing to continue
    if resume and (run_dir / CONFIG).is_file():
        _check_resume_config(run_dir, config)
        if is_done(run_dir):
            if run.info.is_main:
                summary = read_summary(run_dir) or {}
                if untrained:
                    print(f"{run_dir} diverged before its first epoch; nothing to resume: rerun without --resume "
                          "(with other settings, e.g. a lower --lr)", file=sys.stderr)
                else:
                    print(f"{run_dir} already {summary.get('status', 'finished')}; nothing to resume (to train it "
                          f"longer, start a new run from it: stelab train --init {run_dir} --epochs N --out NEW)",
                          file=sys.stderr)
            return read_summary(run_dir)
    elif not resume and not untrained:
        # Only a trained epoch blocks a fresh start: a start that failed or diverged before its first checkpoint
        # has nothing to lose and must not block the corrected re-run.
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    _check_not_orphaned(run_dir)
    return None


def _build_model(run: _Run) -> None:
    """The seeded model (with the ``init`` weights), on the device, in the memory format used for the run."""
    config, device = run.config, run.device
    torch.manual_seed(config.seed)
    run.model = build_model(config, init=config.init)  # init weights loaded, then the weights quantized
    run.model.to(device)
    run.channels_last = config.resolved_channels_last(device.type)
    if run.channels_last:
        run.model.to(memory_format=torch.channels_last)
    if config.distill:  # before the run folder: a teacher that does not fit the model is refused first
        run.teacher = load_teacher(config.model, config.distill, device, run.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _build_optimizer(run: _Run) -> None:
    """SGD (wrapped by BCGD/BinaryRelax when ``config.optimizer`` says so), the learned steps in their own group
    when their rate or decay differ; the schedule drives the inner SGD."""
    c = run.config
    groups = optimizer_groups(run.model, c.resolved_lr(), c.weight_decay, c.step_lr_scale, c.step_weight_decay)
    sgd = torch.optim.SGD(groups, momentum=c.momentum, nesterov=c.nesterov)
    run.optimizer = wrap_optimizer(sgd, run.model, c, c.resolved_epochs() * len(run.loader))
    run.scheduler = make_scheduler(sgd, c)
    run.warmup_steps = c.warmup_steps(len(run.loader))


def _load_data(run: _Run) -> None:
    """The training loader (this rank's share of every epoch) and the normalised test set, on the device."""
    from .. import data

    config, info, device = run.config, run.info, run.device
    mean, std = data.STATS[config.dataset]
    train_x, train_y = runs.load_split(config, "train")
    test_x, test_y = runs.load_split(config, "test")
    run.loader = data.DeviceLoader(train_x, train_y, batch_size=config.batch_size // info.world_size, shuffle=True,
                                   augment=config.resolved_augment(), mean=mean, std=std, device=device,
                                   seed=config.seed, rank=info.rank, world_size=info.world_size,
                                   channels_last=run.channels_last)
    run.test = data.normalise(test_x.to(device), mean, std), test_y.to(device)
    if run.loader.merges_last and info.is_main:
        print(f"stelab train: the last batch of 1 image joins the batch before it (batch norm cannot train on one "
              f"image; {len(train_x)} training images, batch size {config.batch_size})", file=sys.stderr)


def _start_resolutions_from_data(run: _Run, images: int = 256) -> None:
    """Learned resolutions marked ``init_from_data`` that ``init`` did not give start from the first ``images``
    training images (no augmentation, the same in every process; :mod:`stelab.activations.calibrate`)."""
    from .. import data
    from ..activations.calibrate import init_alphas_from_data

    x = data.normalise(run.loader.images[:images], *data.STATS[run.config.dataset])
    fitted = init_alphas_from_data(run.model, x.contiguous(memory_format=torch.channels_last) if run.channels_last
                                   else x)
    if fitted and run.info.is_main:
        values = ", ".join(f"{v:.3g}" for v in fitted.values())
        print(f"stelab train: {len(fitted)} learned resolutions started from data (2 mean|x| / sqrt(2^b - 1) on the "
              f"first {min(images, len(run.loader.images))} training images): {values}", file=sys.stderr)


def _restore(run: _Run) -> float:
    """Model, optimizer, schedule, RNG and counters from the last checkpoint, if any; the time already trained."""
    path = run.run_dir / CHECKPOINT
    if not path.is_file():
        return 0.0
    blob = load_checkpoint(path, map_location=run.device)
    unwrap(run.model).load_state_dict(blob["model"])
    run.optimizer.load_state_dict(blob["optimizer"])
    run.scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    run.epoch, run.step, run.best = blob["epoch"], blob["step"], blob.get("best")
    return float(blob.get("elapsed_s", 0.0))


def _start_run_folder(run: _Run) -> None:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    for tmp in remove_stale_temporaries(run.run_dir):  # left by a process killed while writing (kill -9)
        print(f"{run.run_dir}: removed {tmp.name}, an unfinished write of a killed run", file=sys.stderr)
    write_json(run.run_dir / CONFIG, run.config.to_dict())
    # Records past the checkpoint belong to the interrupted epoch, which is trained again (all of them for a run
    # started afresh, e.g. after one that diverged before its first epoch; so does its summary).
    records = read_jsonl(run.run_dir / METRICS) if run.epoch else []
    kept = [r for r in records if r.get("epoch", 0) <= run.epoch]
    write_text(run.run_dir / METRICS, "".join(_jsonl(r) for r in kept))
    if run.epoch == 0:
        for name in (SUMMARY, "report.md"):
            (run.run_dir / name).unlink(missing_ok=True)


def _wrap(run: _Run) -> nn.Module:
    net: nn.Module = run.model
    if run.info.enabled:
        device = run.device
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if run.config.compile:
        net = torch.compile(net)
    return net


def _train_epoch(run: _Run, epoch: int) -> bool:
    """Train, evaluate, log and checkpoint one epoch; False when the loss turned non-finite (the run stops)."""
    t0 = time.perf_counter()
    try:
        sums = _train_steps(run, epoch, t0)
    except Diverged as err:
        if run.info.is_main:
            kept = (f"the checkpoint of epoch {run.epoch} is kept" if run.epoch else
                    "no epoch was trained, so nothing is kept and a rerun into this folder starts afresh")
            print(f"{run.run_dir}: {err}; stopping, {kept}", file=sys.stderr)
            append_jsonl(run.run_dir / METRICS, {"kind": "diverged", "step": run.step, "epoch": epoch,
                                                 "reason": str(err)})
        return False
    distributed.all_reduce_sum(sums)
    train_time = time.perf_counter() - t0
    # The plain model: DDP's forward would broadcast buffers, a collective the ranks' unequal shares could hang.
    # With the deployed weights Q(w_f), also in BinaryRelax's relaxed phase: the quantized model's accuracy.
    with deployed_weights(run.model):
        test_loss, test_acc = evaluate(run.model, *run.test, run.config.eval_batch_size, run.info,
                                       run.channels_last, run.config.precision)
    record = {"kind": "epoch", "epoch": epoch, "step": run.step, "lr": run.optimizer.param_groups[0]["lr"],
              "train_loss": sums[0].item() / sums[2].item(), "train_acc": sums[1].item() / sums[2].item(),
              "test_loss": test_loss, "test_acc": test_acc, "time_s": time.perf_counter() - t0,
              "images_per_s": sums[2].item() / train_time}
    if run.ste_label is not None:  # a scheduled STE: the one this epoch trained with
        record["ste"] = run.ste_label
    run.scheduler.step()
    run.epoch = epoch
    if run.info.is_main:
        append_jsonl(run.run_dir / METRICS, record)
        _save_checkpoints(run, test_acc)
    return True


def _train_steps(run: _Run, epoch: int, t0: float) -> Tensor:
    """One pass over this rank's share; ``[loss sum, correct, count]`` over its batches (float64)."""
    config, info, device = run.config, run.info, run.device
    # On a GPU every .item() is a sync; there the loss is checked every few steps instead of every step.
    check_every = 1 if device.type == "cpu" else 25
    run.loader.set_epoch(epoch)
    run.net.train()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    bar = progress_bar(len(run.loader), epoch, config.resolved_epochs(), enabled=run.progress and info.is_main)
    try:
        for i, (xb, yb) in enumerate(run.loader):
            try:
                with autocast(device, config.precision), run.pack:
                    out = run.net(xb)
                    loss = run.loss_fn(out, yb)
                    if run.teacher is not None:
                        loss = distill_loss(loss, out, run.teacher, xb, config)
            except ResolutionError as err:  # a learned alpha / step left the positive numbers: a diverged run
                raise Diverged(f"{err} (step {run.step + 1}, epoch {epoch}{bad_resolutions(run.model)})") from None
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if run.step < run.warmup_steps:
                warmup_step(run.scheduler, run.optimizer, run.step, run.warmup_steps)
            else:
                run.optimizer.step()
            run.step += 1
            sums[0] += loss.detach().double() * len(yb)
            sums[1] += (out.detach().argmax(1) == yb).sum()
            sums[2] += len(yb)
            last = i == len(run.loader) - 1
            if (run.step % check_every == 0 or last) and distributed.any_rank(
                    not healthy(sums[0], run.resolutions), device):
                bad = bad_resolutions(run.model)
                raise Diverged(f"a learned resolution left the positive numbers at step {run.step} (epoch {epoch})"
                               f"{bad}; lower the steps' rate (--step-lr-scale 0.1) or every rate (--lr)" if bad else
                               f"non-finite training loss at step {run.step} (epoch {epoch})")
            if info.is_main:
                for record in run_hooks(run.hooks, step=run.step, epoch=epoch, model=unwrap(run.model), inputs=xb,
                                        targets=yb, loss_fn=run.loss_fn):
                    append_jsonl(run.run_dir / METRICS, record)
            if bar is not None:
                update_bar(bar, sums, i % 20 == 0 or last, info.world_size, t0)
    finally:
        if bar is not None:
            bar.close()
    return sums


def _save_checkpoints(run: _Run, test_acc: float) -> None:
    """``checkpoint.pt`` every epoch; ``best.pt`` too when asked and this epoch has the best test accuracy."""
    state = dict(model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, epoch=run.epoch, step=run.step,
                 config=run.config.to_dict())
    if run.config.save_best and (run.best is None or test_acc > run.best["test_acc"]):
        run.best = {"epoch": run.epoch, "test_acc": test_acc}
        save_checkpoint(run.run_dir / BEST, **state, best=run.best)
    save_checkpoint(run.run_dir / CHECKPOINT, **state, best=run.best, elapsed_s=time.perf_counter() - run.t_start)


def _finish(run: _Run, status: str) -> dict[str, Any]:
    wall = time.perf_counter() - run.t_start
    summary = run_summary(run.run_dir, run.config, status, run.step, wall, run.info.world_size, run.info.is_main)
    if run.info.is_main:
        write_summary(run.run_dir, summary)
        plot_curves(run.run_dir)
    return summary


def _jsonl(record: dict) -> str:
    import json

    from ..io import _json_safe

    return json.dumps(_json_safe(record), allow_nan=False) + "\n"
