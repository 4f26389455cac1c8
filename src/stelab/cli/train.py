"""``stelab train``: train one float or quantized model (activations, and weights with ``--weight-bits``); every
hyper-parameter is a flag.

Multi-process data parallel: ``torchrun --nproc_per_node 2 -m stelab.cli train ...`` or ``stelab train --nproc 2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ALPHA_RULES, QuantConfig
from ..ste import PAPER_STES
from ..train.config import DEVICES, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from ..weights import WeightQuantConfig, quantizers
from ..weights.quantizers import GRANULARITIES, SCALE_RULES
from . import SUMMARY


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``stelab reproduce`` (model choice excluded)."""
    d = TrainConfig()
    p.add_argument("--lr", type=float, default=None,
                   help="initial rate (default 0.1 from scratch, 0.01 when fine-tuning from --init)")
    p.add_argument("--lr-milestones", type=float, nargs="*", default=list(d.lr_milestones), metavar="F",
                   help="fractions of the run where the rate is cut by --lr-gamma (default 0.5 0.75; none: constant)")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma)
    p.add_argument("--lr-schedule", choices=SCHEDULES, default=d.lr_schedule,
                   help="step: multiply by --lr-gamma at --lr-milestones (default); cosine: cosine to 0 over the run")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, metavar="W",
                   help="linear warm-up of the rate over the first W epochs, per step (default 0: none; "
                        "reproduce table1: the float runs only)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size over all processes")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--nesterov", action="store_true")
    _bool_flag(p, "augment", "crop+flip augmentation (default: on for cifar10)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/ and cifar-10-batches-py/")
    p.add_argument("--device", choices=DEVICES, default=d.device)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    _bool_flag(p, "channels-last", "channels_last memory format (default: the faster one measured for the model "
                                   "and device, see BENCHMARKS.md)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="fp32, or bf16 mixed precision (autocast; fastest on CPUs with AVX-512 bf16/AMX and on "
                        "GPUs; default fp32)")
    p.add_argument("--limit-train", type=int, default=0, metavar="N", help="use the first N training images")
    p.add_argument("--limit-test", type=int, default=0, metavar="N", help="use the first N test images")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="N random images instead of the data set")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_weight_arguments(p)


def add_weight_arguments(p: argparse.ArgumentParser) -> None:
    """``--weight-*`` (TrainConfig.weights, a WeightQuantConfig) and ``--optimizer`` with the wrappers' parameters.

    The ``--weight-*`` defaults are None ("not given"): the config's defaults apply, and a ``--weight-*`` flag
    without ``--weight-bits`` is an error rather than silently ignored.
    """
    d, w = TrainConfig(), WeightQuantConfig()
    g = p.add_argument_group("quantized weights (default: float weights)")
    g.add_argument("--weight-bits", type=int, default=None, metavar="B",
                   help="quantize the Linear/Conv2d weights to B bits; turns weight quantization on (uniform: "
                        "2..16; 1 picks binary; ternary: 2 with --weight-quantizer ternary)")
    g.add_argument("--weight-quantizer", default=None,
                   help=f"{' | '.join(quantizers.names())} (default {w.quantizer})")
    g.add_argument("--weight-ste", default=None,
                   help=f"STE of the weights, one not zero below 0 (default {w.ste}; e.g. hardtanh)")
    g.add_argument("--weight-granularity", default=None,
                   help=f"{' | '.join(GRANULARITIES)}: one scale per tensor or per output channel "
                        f"(default {w.granularity})")
    g.add_argument("--weight-scale-rule", default=None,
                   help=f"{' | '.join(SCALE_RULES)} (default: mean for binary/ternary, max for uniform; lsq learns "
                        "the scale, and is the one to use for uniform at 2-3 bits: docs/weights.md)")
    g.add_argument("--weight-scale", type=float, default=None, help="the scale of --weight-scale-rule fixed, or "
                                                                      "lsq's initial step")
    g.add_argument("--weight-first-last", action="store_true",
                   help="quantize the weights of the first conv and the last linear layer too (default: they stay "
                        "float, the common practice)")
    g.add_argument("--optimizer", default=d.optimizer,
                   help=f"{' | '.join(OPTIMIZERS)}: SGD, or SGD wrapped by BCGD or BinaryRelax (these need "
                        f"--weight-bits; default {d.optimizer})")
    g.add_argument("--bcgd-rho", type=float, default=d.bcgd_rho, help=f"BCGD's blend rho (default {d.bcgd_rho:g})")
    g.add_argument("--relax-lam", type=float, default=d.relax_lam,
                   help=f"BinaryRelax's initial lambda (default {d.relax_lam:g})")
    g.add_argument("--relax-growth", type=float, default=d.relax_growth,
                   help=f"factor BinaryRelax's lambda grows by over its relaxed phase (default {d.relax_growth:g})")
    g.add_argument("--relax-hard-at", type=float, default=d.relax_hard_at,
                   help=f"fraction of the run's steps after which BinaryRelax trains the exactly quantized weights "
                        f"(default {d.relax_hard_at:g}; 1: never)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=SUMMARY["train"],
                       description="Train a float or quantized model: activations (--bits, --ste) and, with "
                                   "--weight-bits, weights (SGD with momentum, or BCGD/BinaryRelax around it; "
                                   "step-decayed rate).")
    p.add_argument("--model", default="lenet5",
                   help="lenet5, lenet5-caffe (mnist) | vgg11, resnet20 (cifar10); default lenet5")
    p.add_argument("--dataset", default="mnist", help="mnist | cifar10 (default mnist)")
    q = QuantConfig()  # the flags' defaults are QuantConfig's
    p.add_argument("--bits", type=int, default=q.bits, help=f"activation bits (default {q.bits}; ignored with --float)")
    p.add_argument("--ste", default=q.ste,
                   help=f"STE name, e.g. {', '.join(PAPER_STES)} (default {q.ste}; see `stelab info`)")
    p.add_argument("--ste-schedule", action="append", default=None, metavar="PARAM=START:END[:SHAPE]",
                   help="schedule a parameter of --ste over the run, once per epoch; SHAPE linear (default), "
                        "geometric or cosine; repeatable (e.g. --ste ede --ste-schedule t=0.1:10:geometric)")
    p.add_argument("--forward", default=q.forward, help=f"forward quantizer (default {q.forward})")
    p.add_argument("--alpha", type=float, default=q.alpha,
                   help="resolution (default: Lloyd's for the bits); with --learn-alpha its initial value")
    p.add_argument("--learn-alpha", action="store_true",
                   help="train the activations' resolution with the --alpha-rule gradient (one per activation)")
    p.add_argument("--alpha-rule", default=None,  # None: not given (an error without --learn-alpha)
                   help=f"gradient of a learned resolution: {' | '.join(ALPHA_RULES)} (default {q.alpha_rule}; "
                        "with --learn-alpha only; docs/quantizers.md)")
    p.add_argument("--float", dest="float_model", action="store_true",
                   help="float (ReLU) activations (with --weight-bits only the weights are quantized)")
    p.add_argument("--init", default=None, help="checkpoint file or run folder to start from (float model)")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the paper's, 50 for the LeNets, 200 for vgg11/resnet20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>-<kind>-seed<seed>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint with the settings in its config.json "
                        "(other flags optional; one that differs from the saved value is an error)")
    p.add_argument("--save-best", action="store_true", help="also keep best.pt (highest test accuracy)")
    _bool_flag(p, "pack-saved", "keep the quantized activations' outputs saved for backward as packed n-bit codes, "
                                "restored exactly: the same run in less memory (not with --compile; docs/training.md)")
    _bool_flag(p, "recompute", "with --pack-saved: recompute each convolution's output in the backward instead of "
                               "keeping it (bit for bit; less memory again for one more convolution forward)")
    p.add_argument("--recompute-limit", type=int, default=None, metavar="MACS",
                   help="with --recompute: only the convolutions costing at most MACS multiply-adds per output "
                        "element (C_in/groups * kh * kw; e.g. 300: the cheap early layers, most of the memory)")
    p.add_argument("--diagnose-every", type=int, default=0, metavar="N",
                   help="run stelab.diagnostics.DiagnosticsHook every N steps (0 = off)")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes launched here (like torchrun)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out folder that holds another command's report.md/results.json")
    add_train_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    return TrainConfig(**_fields_from_args(args, **overrides))


def _fields_from_args(args: argparse.Namespace, **overrides) -> dict:
    from .. import models

    model = overrides.pop("model", getattr(args, "model", "lenet5"))
    if model not in models.names():
        from ..errors import unknown_name

        raise unknown_name("model", model, models.names())
    fields = dict(
        model=model, dataset=getattr(args, "dataset", "mnist"), quant=_quant_from_args(args),
        weights=_weights_from_args(args), **_optimizer_from_args(args),
        init=getattr(args, "init", None), epochs=getattr(args, "epochs", None),
        lr=args.lr, lr_milestones=tuple(args.lr_milestones), lr_gamma=args.lr_gamma, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size, momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov,
        augment=args.augment,
        seed=getattr(args, "seed", 0), data_dir=args.data_dir, out=getattr(args, "out", None), device=args.device,
        compile=args.compile, channels_last=args.channels_last, precision=args.precision,
        limit_train=args.limit_train,
        limit_test=args.limit_test, synthetic=args.synthetic, eval_batch_size=args.eval_batch_size,
        diagnose_every=getattr(args, "diagnose_every", 0), save_best=getattr(args, "save_best", False),
    )
    fields["pack_saved"] = bool(getattr(args, "pack_saved", None))  # None: not given
    fields["recompute"] = bool(getattr(args, "recompute", None))
    fields["recompute_limit"] = getattr(args, "recompute_limit", None)
    fields["ste_schedule"] = tuple(getattr(args, "ste_schedule", None) or ())
    fields.update(overrides)
    return fields


def _quant_from_args(args: argparse.Namespace) -> QuantConfig | None:
    """``--float``: None; otherwise the QuantConfig of --bits --ste --forward --alpha --learn-alpha --alpha-rule
    (absent flags: its defaults)."""
    if getattr(args, "float_model", False):
        return None
    fields = {f: getattr(args, f) for f in QUANT_FLAGS if hasattr(args, f)}
    if fields.get("alpha_rule") is None:
        fields.pop("alpha_rule", None)  # not given: QuantConfig's default
    elif not fields.get("learn_alpha"):
        raise ValueError("--alpha-rule sets the gradient of a learned resolution, but the resolution is fixed; give "
                         "--learn-alpha too, or drop --alpha-rule")
    return QuantConfig.merged(**fields)


# --weight-* flags -> WeightQuantConfig fields
WEIGHT_FLAGS = {"weight_bits": "bits", "weight_quantizer": "quantizer", "weight_ste": "ste",
                "weight_granularity": "granularity", "weight_scale_rule": "scale_rule", "weight_scale": "scale"}
# The optimizer wrappers' flags and the optimizer that reads each
WRAPPER_FLAGS = {"bcgd_rho": "bcgd", "relax_lam": "binaryrelax", "relax_growth": "binaryrelax",
                 "relax_hard_at": "binaryrelax"}


def _weights_from_args(args: argparse.Namespace) -> WeightQuantConfig | None:
    """None (float weights) without ``--weight-bits``; else the WeightQuantConfig of the ``--weight-*`` flags."""
    given = {f: getattr(args, dest) for dest, f in WEIGHT_FLAGS.items() if getattr(args, dest, None) is not None}
    if "bits" not in given:
        if given:
            flags = ", ".join("--" + d.replace("_", "-") for d, f in WEIGHT_FLAGS.items() if f in given)
            raise ValueError(f"{flags} set(s) how weights are quantized, but weight quantization is off; give "
                             "--weight-bits B to turn it on")
        return None
    if given["bits"] == 1 and "quantizer" not in given:
        given["quantizer"] = "binary"  # the only 1-bit weight quantizer
    return WeightQuantConfig(**given)  # a bad name or value raises listing the valid choices


def _optimizer_from_args(args: argparse.Namespace) -> dict:
    """``optimizer``, ``weight_first_last`` and the wrapper parameters; one given for another optimizer is an error."""
    d = TrainConfig()
    optimizer = getattr(args, "optimizer", d.optimizer)
    fields = {"optimizer": optimizer, "weight_first_last": getattr(args, "weight_first_last", False)}
    for dest, owner in WRAPPER_FLAGS.items():
        value = getattr(args, dest, getattr(d, dest))
        if value != getattr(d, dest) and optimizer != owner:
            raise ValueError(f"--{dest.replace('_', '-')} is a parameter of --optimizer {owner}, not of "
                             f"{optimizer}; drop it or give --optimizer {owner}")
        fields[dest] = value
    return fields


def run(args: argparse.Namespace) -> int:
    from ..io import check_out_dir
    from ..train import train
    from ..train.distributed import from_env
    from ..train.loop import run_dir_for

    # Validate in the parent before launching children, and before anything is loaded or created.
    config = _resume_config(args) if args.resume else config_from_args(args)
    run_dir = run_dir_for(config)
    # Another command's report in the folder is not overwritten without --force; a run folder of train's own is
    # guarded by the training loop (a trained epoch blocks a fresh start, an untrained one does not).
    foreign = () if args.resume or (run_dir / "config.json").is_file() else ("report.md", "results.json")
    check_out_dir(run_dir, reports=foreign, force=args.force)
    is_main = from_env().is_main
    if is_main:
        verb = "resuming" if args.resume else "writing to"
        print(f"stelab train: {verb} {run_dir}")
        print(f"stelab train: initial learning rate {config.resolved_lr():g} ({config.lr_reason()})", flush=True)
        if note := config.precision_note():
            print(f"stelab train: note: {note}", flush=True)
    specs = hook_specs(config)
    hooks = [spec.build() for spec in specs]  # built here too, so that a bad hook fails before any launch
    try:
        if args.nproc > 1:
            from ..train.runs import read_summary
            from ..train.worker import launch

            code = launch(config, args.nproc, resume=args.resume, progress=not args.no_progress, hooks=specs)
            summary = read_summary(run_dir) or {"status": f"failed (exit code {code})"}
        else:
            summary = train(config, hooks, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        if is_main:
            print(f"stelab train: interrupted; the last finished epoch is kept. Continue with: stelab train --resume "
                  f"--out {run_dir}", file=sys.stderr)
        return 130
    if is_main:
        keys = ("status", "epochs_done", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time_s")
        print(" ".join(f"{k}={_fmt(summary.get(k))}" for k in keys))
        print(f"stelab train: run folder {run_dir}")
    return 0 if summary.get("status") == "finished" else 3


# The hook --diagnose-every adds, by name: worker processes of --nproc build it from this (stelab.train.hooks).
DIAGNOSTICS_HOOK = "stelab.diagnostics:DiagnosticsHook"


def hook_specs(config: TrainConfig) -> list:
    """The training hooks the command line asks for: the diagnostics hook every ``diagnose_every`` steps.

    From the config (where ``--diagnose-every`` is recorded), so that ``--resume`` keeps diagnosing a run that was.
    """
    from ..train.hooks import HookSpec

    return [HookSpec(DIAGNOSTICS_HOOK, {"every": config.diagnose_every})] if config.diagnose_every else []


# Flags that set a field of TrainConfig.quant (a QuantConfig), and --float, which makes it None.
QUANT_FLAGS = ("bits", "ste", "forward", "alpha", "learn_alpha", "alpha_rule")
_QUANT_FIELD_OF = {**{f: f for f in QUANT_FLAGS}, "float_model": "bits"}


def _resume_config(args: argparse.Namespace) -> TrainConfig:
    """The run's saved config.json; flags given on the command line must agree with it (runtime-only ones win)."""
    from ..train.loop import RUNTIME_FIELDS, run_dir_for
    from ..train.runs import CONFIG, read_config

    given = given_flags(args)
    wanted = _fields_from_args(args)
    run_dir = Path(wanted["out"]) if wanted["out"] else run_dir_for(TrainConfig(**wanted))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume: run folder {run_dir} does not exist; check --out, or start a new run "
                                "without --resume")
    saved = read_config(run_dir).to_dict()  # a legacy flat config.json converts
    changes = {"out": str(run_dir)}
    for dest, flag in sorted(given.items()):
        if dest in _QUANT_FIELD_OF:  # compared field by field: --ste alone must not compare the default --bits
            field = _QUANT_FIELD_OF[dest]
            new, old = (None if q is None else q[field] for q in (_dict(wanted["quant"]), saved["quant"]))
        elif dest in WEIGHT_FLAGS:  # likewise for the weights' fields
            new, old = (None if w is None else w[WEIGHT_FLAGS[dest]] for w in (_dict(wanted["weights"]),
                                                                              saved["weights"]))
            field = f"weights.{WEIGHT_FLAGS[dest]}"
        elif dest in saved and dest != "out":
            field, new, old = dest, _jsonable(wanted[dest]), _jsonable(saved[dest])
        else:
            continue
        if field in RUNTIME_FIELDS:
            changes[field] = wanted[field]
        elif new != old:
            longer = (f"; to train this run further, start a new one from it: stelab train --init {run_dir} "
                      f"--epochs {new} --out NEW_FOLDER (a fresh schedule from its weights)"
                      if field == "epochs" else "")
            raise ValueError(f"--resume: {flag} gives {field}={new!r} but the run in {run_dir / CONFIG} has "
                             f"{old!r}; drop {flag} to continue the run as saved, or start a new run in another "
                             f"--out{longer}")
    return TrainConfig.from_dict({**saved, **changes})


def given_flags(args: argparse.Namespace) -> dict[str, str]:
    """``{dest: option}`` for the train flags present on the command line ``args.argv``.

    Values alone cannot tell ``--bits 2`` from the default 2, so the command line is parsed again with every default
    removed. Without ``args.argv`` (called from Python), a flag counts as given when its value is not the default.
    """
    parser = argparse.ArgumentParser(add_help=False)
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    actions = [a for a in sub.choices["train"]._actions if a.option_strings and a.dest != "help"]
    options = {a.dest: a.option_strings[0] for a in actions}
    argv = getattr(args, "argv", None)
    if argv is None:
        defaults = vars(parser.parse_args(["train"]))
        return {d: o for d, o in options.items() if d in vars(args) and vars(args)[d] != defaults[d]}
    for action in actions:
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return {d: o for d, o in options.items() if d in vars(given)}


def _dict(config: QuantConfig | WeightQuantConfig | None) -> dict | None:
    return None if config is None else config.to_dict()


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
