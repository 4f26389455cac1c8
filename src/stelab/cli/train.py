"""``stelab train``: train one float or quantized model (activations, and weights with ``--weight-bits``); every
hyper-parameter is a flag.

Multi-process data parallel: ``torchrun --nproc_per_node 2 -m stelab.cli train ...`` or ``stelab train --nproc 2``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..activations.config import QuantConfig
from ..train.config import TrainConfig
from ..weights import WeightQuantConfig, quantizers
from . import SUMMARY
from .fields import add_flags, values

# Which TrainConfig fields each group of flags sets; each flag's type, default and help come from the field
# (stelab.cli.fields). The model choice and the run's identity (init, epochs, seed, out, ...) are train's own; the
# rest is shared with `stelab reproduce`.
SHARED_FIELDS = ("lr", "lr_milestones", "lr_gamma", "lr_schedule", "warmup_epochs", "batch_size", "momentum",
                 "weight_decay", "nesterov", "augment", "data_dir", "device", "compile", "channels_last", "precision",
                 "limit_train", "limit_test", "synthetic", "eval_batch_size")
TRAIN_FIELDS = ("model", "dataset", "ste_schedule", "act_placement", "bn_affine", "init", "epochs", "seed", "out",
                "save_best", "pack_saved", "recompute", "recompute_limit", "diagnose_every", "step_lr_scale",
                "step_weight_decay")
OPTIMIZER_FIELDS = ("weight_first_last", "optimizer", "bcgd_rho", "relax_lam", "relax_growth", "relax_hard_at")
DISTILL_FIELDS = ("distill", "distill_temperature", "distill_weight")
# Flags that set a field of TrainConfig.quant (a QuantConfig), and --float, which makes it None.
QUANT_FLAGS = ("bits", "ste", "forward", "alpha", "learn_alpha", "alpha_rule")
# --weight-* flags -> WeightQuantConfig fields
WEIGHT_FIELDS = ("bits", "quantizer", "ste", "granularity", "scale_rule", "scale")
WEIGHT_FLAGS = {f"weight_{f}": f for f in WEIGHT_FIELDS}
# The optimizer wrappers' flags and the optimizer that reads each
WRAPPER_FLAGS = {"bcgd_rho": "bcgd", "relax_lam": "binaryrelax", "relax_growth": "binaryrelax",
                 "relax_hard_at": "binaryrelax"}


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``stelab reproduce`` (model choice excluded)."""
    add_flags(p, TrainConfig, SHARED_FIELDS)
    add_flags(p.add_argument_group("distillation from a float teacher (default: none)"), TrainConfig, DISTILL_FIELDS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_weight_arguments(p)


def add_weight_arguments(p: argparse.ArgumentParser) -> None:
    """``--weight-*`` (TrainConfig.weights, a WeightQuantConfig) and ``--optimizer`` with the wrappers' parameters.

    The ``--weight-*`` defaults are None ("not given"): the config's defaults apply, and a ``--weight-*`` flag
    without ``--weight-bits`` is an error rather than silently ignored.
    """
    g = p.add_argument_group("quantized weights (default: float weights)")
    add_flags(g, WeightQuantConfig, WEIGHT_FIELDS, prefix="weight_", all_not_given=True)
    add_flags(g, TrainConfig, OPTIMIZER_FIELDS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=SUMMARY["train"],
                       description="Train a float or quantized model: activations (--bits, --ste) and, with "
                                   "--weight-bits, weights (SGD with momentum, or BCGD/BinaryRelax around it; "
                                   "step-decayed rate).")
    add_flags(p, TrainConfig, TRAIN_FIELDS[:2])
    add_flags(p, QuantConfig, QUANT_FLAGS[:2])
    add_flags(p, TrainConfig, TRAIN_FIELDS[2:5])
    add_flags(p, QuantConfig, QUANT_FLAGS[2:5])
    add_flags(p, QuantConfig, QUANT_FLAGS[5:], all_not_given=True)  # None: not given (an error without --learn-alpha)
    p.add_argument("--float", dest="float_model", action="store_true",
                   help="float (ReLU) activations (with --weight-bits only the weights are quantized)")
    add_flags(p, TrainConfig, TRAIN_FIELDS[5:9])
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint with the settings in its config.json "
                        "(other flags optional; one that differs from the saved value is an error)")
    add_flags(p, TrainConfig, TRAIN_FIELDS[9:])
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
    fields = values(args, TrainConfig, SHARED_FIELDS + TRAIN_FIELDS + DISTILL_FIELDS)
    fields.update(model=model, quant=_quant_from_args(args), weights=_weights_from_args(args),
                  **_optimizer_from_args(args))
    fields.update(overrides)
    return fields


def _quant_from_args(args: argparse.Namespace) -> QuantConfig | None:
    """``--float``: None; otherwise the QuantConfig of --bits --ste --forward --alpha --learn-alpha --alpha-rule
    (absent flags: its defaults)."""
    if getattr(args, "float_model", False):
        return None
    fields = values(args, QuantConfig, QUANT_FLAGS, given_only=True)  # absent: QuantConfig's defaults
    if "alpha_rule" in fields and not fields.get("learn_alpha"):
        raise ValueError("--alpha-rule sets the gradient of a learned resolution, but the resolution is fixed; give "
                         "--learn-alpha too, or drop --alpha-rule")
    return QuantConfig.merged(**fields)


def _weights_from_args(args: argparse.Namespace) -> WeightQuantConfig | None:
    """None (float weights) without ``--weight-bits``; else the WeightQuantConfig of the ``--weight-*`` flags."""
    given = values(args, WeightQuantConfig, WEIGHT_FIELDS, prefix="weight_", given_only=True)
    if "bits" not in given:
        if given:
            flags = ", ".join("--" + d.replace("_", "-") for d, f in WEIGHT_FLAGS.items() if f in given)
            raise ValueError(f"{flags} set(s) how weights are quantized, but weight quantization is off; give "
                             "--weight-bits B to turn it on")
        return None
    if "quantizer" not in given and len(takers := quantizers.accepting(given["bits"])) == 1:
        given["quantizer"] = takers[0]  # e.g. --weight-bits 1: binary, the only 1-bit weight quantizer
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
    saved = read_config(run_dir).flat_dict()  # a legacy flat config.json converts
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
