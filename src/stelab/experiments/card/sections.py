"""The measurements of a report card, one function per section and STE: each returns plain numbers (JSON) and is
called as a function of the experiment it comes from (the theory, the symmetry model, the classifier, the
diagnostics, training), never as a subprocess.

1. ``what``: properties, fused or general path, the op's cost against relu.
2. ``two_layer``: Yin et al.'s model: cosine of the expected coarse gradient with the true gradient over the angle
   (closed form for the tables the theory knows, exact-in-one-variable integration otherwise), whether it is a
   descent direction everywhere, whether the spurious minimizer is stationary for it, and coarse gradient descent
   from random starts (fraction converged, fraction unstable).
3. ``symmetry``: the bias-free binary network of Gongyo & Ishikawa: does the coarse gradient change when a hidden
   unit's weights are scaled (a scale-invariant STE keeps the symmetry: relative change 0).
4. ``classify``: the two-layer quantized classifier of Long, Yin & Xin trained with the coarse gradient (synthetic
   data: training accuracy).
5. ``fidelity``: on a float LeNet-5 quantized at the card's bits: the whole-model cosine of the coarse gradient with
   the smoothed reference (with its interval) and the mean coarse gradient's length.
6. ``train``: LeNet-5 fine-tuned from the float checkpoint on MNIST, one run per (learning rate, seed).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import ste as ste_registry
from ...activations.config import QuantConfig
from ...activations.lloyd import lloyd_alpha
from ...activations.ops import fused_plan, quantize
from ...theory import two_layer as tl
from .config import CardConfig


def what(label: str, config: CardConfig) -> dict[str, Any]:
    ste = ste_registry.get(label)
    alpha = lloyd_alpha(config.bits)
    fused = fused_plan("staircase", config.bits, alpha, ste) is not None
    return {"monotone": ste.monotone, "zero_below": ste.zero_below, "scale_invariant": ste.scale_invariant,
            "piecewise": ste.piecewise is not None, "path": "fused" if fused else "general",
            "op_cost_vs_relu": _op_cost(label, config.bits, alpha)}


def _op_cost(label: str, bits: int, alpha: float, n: int = 1 << 19, repeats: int = 5) -> float:
    """Median time of one forward + backward of the quantized activation over that of ``torch.relu``, same tensor
    (``n`` float32 elements), interleaved; a rough figure (the benchmarks measure the op properly)."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    g = torch.ones(n)

    def op():
        quantize(x, bits=bits, alpha=alpha, ste=label, check_nan=False).backward(g)

    def relu():
        torch.relu(x).backward(g)

    times: dict[str, list[float]] = {"op": [], "relu": []}
    for _ in range(repeats + 1):
        for name, fn in (("op", op), ("relu", relu)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return statistics.median(times["op"][1:]) / statistics.median(times["relu"][1:])


def two_layer(label: str, config: CardConfig, seed: int = 0) -> dict[str, Any]:
    sizes = config.sizes
    prob = tl.teacher_with_spurious_minima(5, 10, seed)
    vs, ws = prob["v_star"], prob["w_star"]
    rng = np.random.default_rng((seed, 9))
    v = vs + 0.5 * rng.standard_normal(len(vs))
    cosines = []
    for theta in np.linspace(0.02, math.pi - 0.02, sizes["cosine_points"]):
        w = tl.unit_at_angle(ws, theta)
        g, (_, gw) = tl.expected_coarse_grad(v, w, vs, ws, label), tl.population_grad(v, w, vs, ws)
        cosines.append(float(g @ gw / (np.linalg.norm(g) * np.linalg.norm(gw))))
    spur = next(p for p in tl.critical_points(vs, ws) if p.kind == "spurious_min")
    at_spurious = float(np.linalg.norm(tl.expected_coarse_grad(spur.v, spur.w, vs, ws, label)))
    converged = unstable = 0
    for _ in range(sizes["starts"]):
        w0 = rng.standard_normal(len(ws))
        v0 = 0.1 * rng.standard_normal(len(vs))
        traj = tl.coarse_gradient_descent(v0, w0 / np.linalg.norm(w0), vs, ws, label, 0.1, sizes["descent_steps"])
        r = traj.records
        losses = np.asarray(r["loss"])
        rises = int(np.sum(np.diff(losses) > 1e-12 * (1 + np.abs(losses[:-1]))))
        collapse = min(r["w_norm"]) < 0.1 * r["w_norm"][0]
        unstable += bool(rises or collapse or traj.stopped)
        final = max(r["grad_v_norm"][-1], min(r["grad_w_norm"][-1], math.sin(r["theta"][-1])))
        converged += bool(final < 1e-3 and not traj.stopped)
    return {"min_cosine": min(cosines), "mean_cosine": statistics.fmean(cosines),
            "descent_everywhere": min(cosines) > 0, "coarse_grad_at_spurious_min": at_spurious,
            "spurious_min_stationary": at_spurious < 1e-9, "starts": sizes["starts"],
            "converged_fraction": converged / sizes["starts"], "unstable_fraction": unstable / sizes["starts"]}


def symmetry(label: str, config: CardConfig, seed: int = 0) -> dict[str, Any]:
    from ...theory import symmetry as sym

    n = config.sizes["symmetry_samples"]
    x = sym.sample_inputs("mixture", n, seed)
    data = sym.WeightedData(x, sym.misspecified_labels(x), torch.full((n,), 1.0 / n, dtype=torch.float64))
    gen = torch.Generator().manual_seed(seed)
    v, w = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(4, 2, generator=gen, dtype=torch.float64)
    base = sym.coarse_grad_w(v, w, data, label)
    change = max(float((sym.coarse_grad_w(v, c * w, data, label) - base).norm() / base.norm().clamp_min(1e-300))
                 for c in (0.25, 4.0))
    return {"relative_change_under_scaling": change, "keeps_symmetry": change < 1e-9}


def classify(label: str, config: CardConfig, seed: int = 0) -> dict[str, Any]:
    from ...theory.classify import CoarseGDConfig, train_coarse
    from ..classify import SyntheticSettings

    settings = SyntheticSettings()
    accuracies = []
    for kind in settings.kinds:
        data = settings.data(kind, seed)
        cfg = CoarseGDConfig(bits=config.bits, ste=label, seed=seed, lr=settings.lr,
                             steps=config.sizes["classify_steps"], hidden=settings.hidden, fixed_readout=True,
                             loss="hinge", eval_every=max(1, config.sizes["classify_steps"] // 10))
        accuracies.append(float(train_coarse(cfg, data.x, data.y, data.num_classes)["train"]["accuracy"]))
    out: dict[str, Any] = {"accuracy": statistics.fmean(accuracies), "by_kind": dict(zip(settings.kinds, accuracies))}
    if config.sizes.get("classify_mnist") and not config.synthetic:  # the standard tier: the same classifier on MNIST
        from ..classify import MnistSettings, run_mnist

        mnist = run_mnist(MnistSettings(stes=(label,), bits=(config.bits,), seeds=(seed,), epochs=1,
                                        train_subset=config.sizes["classify_mnist"], data_dir=config.data_dir),
                          progress=False)
        out["mnist_test_accuracy"] = mnist["runs"][0]["test_accuracy"]
    return out


def fidelity(label: str, config: CardConfig, seed: int = 0, model: str = "lenet5",
             checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Section 5 at the float network quantized at the card's bits, or at ``checkpoint`` (the clipped-relu end
    point: LeNet-5 fine-tuned with clipped relu at the common rate)."""
    from ...diagnostics.fidelity import MODEL, gradient_fidelity
    from ..diagnose import DiagnoseConfig, load_batches, load_model

    batches = config.sizes["fidelity_batches"]
    batch_size = min(256, max(8, config.synthetic // batches)) if config.synthetic else 256
    init = checkpoint or (config.lenet_init if model == "lenet5" else config.resnet_init)
    diag = DiagnoseConfig(model=model, checkpoint=str(init), bits=config.bits, stes=(label,),
                          batches=batches, batch_size=batch_size, synthetic=config.synthetic,
                          data_dir=config.data_dir, seed=seed)
    net, dataset, _ = load_model(diag)
    net.train()
    result = gradient_fidelity(net, load_batches(diag, dataset), [label], seed=seed)
    row = result.get(label, MODEL)
    return {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in row.items()}


def fidelity_resnet(label: str, config: CardConfig, seed: int = 0) -> dict[str, Any]:
    return fidelity(label, config, seed, model="resnet20")


def train_cell(label: str, config: CardConfig, lr: float, seed: int, out: Path,
               model: str = "lenet5") -> dict[str, Any]:
    """One fine-tuning run from the float checkpoint: LeNet-5 on MNIST, or ResNet-20 on CIFAR-10 (weight decay 5e-4,
    augmentation on; bf16 where the CPU or GPU has it natively, else fp32, the faster there)."""
    from ...train import TrainConfig, train

    lenet = model == "lenet5"
    run = TrainConfig(model=model, dataset="mnist" if lenet else "cifar10",
                      init=config.lenet_init if lenet else config.resnet_init,
                      epochs=config.sizes["lenet_epochs" if lenet else "resnet_epochs"],
                      quant=QuantConfig(bits=config.bits, ste=label), lr=lr, lr_schedule="cosine", seed=seed,
                      synthetic=config.synthetic, data_dir=config.data_dir, out=str(out),
                      **({} if lenet else {"precision": "bf16", "weight_decay": 5e-4}))
    if run.precision_note():  # bf16 emulated on this CPU: fp32 is about twice as fast
        run = run.replace(precision="fp32")
    resume = (out / "checkpoint.pt").is_file()
    summary = train(run, resume=resume, progress=False)
    return {"lr": lr, "seed": seed, "precision": run.precision, "status": summary.get("status"),
            "test_acc": summary.get("test_acc"), **first_1000(out, summary),
            "train_loss": summary.get("train_loss"), "wall_time_s": summary.get("wall_time_s")}


def first_1000(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """``{"test_acc_first1000": ...}`` for a finished CIFAR-10 run (the first 1,000 test images, the only ones
    identical to the official set), else ``{}``."""
    from ..reproduce.table1 import with_subset_accuracy

    acc = with_subset_accuracy(summary, run_dir).get("test_acc_first1000")
    return {} if acc is None else {"test_acc_first1000": acc}


SECTIONS = {"what": what, "two_layer": two_layer, "symmetry": symmetry, "classify": classify, "fidelity": fidelity}
#: Sections of the standard and full tiers only (``resnet_epochs`` > 0).
RESNET_SECTIONS = {"fidelity_resnet20": fidelity_resnet}

__all__ = ["RESNET_SECTIONS", "SECTIONS", "classify", "fidelity", "fidelity_resnet", "symmetry", "train_cell",
           "two_layer", "what"]
