"""The instability experiment of Yin et al. (2019): a "bad" STE drives training away from a good minimum.

From the minimum reached with a good STE (relu / clipped relu), training continues with a poorer STE at a tiny
rate (1e-5, 20 epochs); the paper reports that training loss and validation accuracy both get clearly worse, i.e.
the minimum is not a stable point of the coarse-gradient dynamics of the poor STE. Default pairs (bits: from -> to):
4: relu -> identity, 4: clipped_relu -> identity, 2: clipped_relu -> relu. With ``then_epochs > 0`` each switched
run then continues with the same STE under the normal quantized schedule (the paper's "then the normal schedule"),
which shows whether the poorer STE recovers or settles at a worse point.

As a control (on by default) each minimum is also continued with its own STE at the same rate: any drift there
is the noise of SGD at that rate, not the STE. The source minima are the cells of a Table 1 sweep under
``--table1-dir`` (trained there first, with ``epochs_scale``, if missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...activations.config import QuantConfig
from ...executors import Executor, Task, dedupe, local_executor, run_graph
from ...io import JsonConfig, markdown_table, save_figure, write_json, write_text
from ...train import TrainConfig, epoch_records
from ..shape import finding
from .table1 import cell_dir, float_dir, run_or_resume, scaled_epochs, subset_note, with_subset_accuracy

# The paper's three switches, named literally: each pair is one specific (good -> poorer) STE transition.
DEFAULT_PAIRS = ((4, "relu", "identity"), (4, "clipped_relu", "identity"), (2, "clipped_relu", "relu"))


@dataclass(frozen=True)
class InstabilityConfig(JsonConfig):
    """The instability experiment: for each ``(bits, from, to)`` pair, continue the ``from`` STE's minimum with the
    ``to`` STE for ``switch_epochs`` at the constant rate ``switch_lr`` (and the ``from`` STE itself as a control),
    then, with ``then_epochs > 0``, the normal quantized schedule with the same STE. The minima are the cells of a
    Table 1 sweep under ``table1_dir`` (trained there first, ``epochs_scale`` of the paper's epochs, if missing;
    ``None``: under the output folder's ``minima/``). ``train`` holds the shared hyper-parameters (``None``: the
    defaults); model, seed, epochs, quantization, init, rate and output folder are set per run."""

    dataset: str = "mnist"
    model: str = "lenet5"
    pairs: tuple[tuple[int, str, str], ...] = DEFAULT_PAIRS
    switch_lr: float = 1e-5
    switch_epochs: int = 20
    seed: int = 0
    table1_dir: str | None = None
    epochs_scale: float = 1.0
    control: bool = True
    then_epochs: int = 0
    train: TrainConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple((int(b), str(f), str(t)) for b, f, t in self.pairs))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))
        if self.train is None:
            object.__setattr__(self, "train", TrainConfig(model=self.model, dataset=self.dataset))
        epochs = scaled_epochs(self.model, self.epochs_scale)  # of the minima trained here
        object.__setattr__(self, "train", self.train.replace(model=self.model, dataset=self.dataset, seed=self.seed,
                                                             epochs=epochs))
        for bits, src, dst in self.pairs:
            QuantConfig(bits=bits, ste=src), QuantConfig(bits=bits, ste=dst)  # raises with the valid choices
        if self.then_epochs < 0 or self.switch_epochs < 1 or not self.switch_lr > 0 or not self.epochs_scale > 0:
            raise ValueError(f"need then_epochs >= 0, switch_epochs >= 1, switch_lr > 0 and epochs_scale > 0, got "
                             f"{self.then_epochs}, {self.switch_epochs}, {self.switch_lr} and {self.epochs_scale}")


def run_instability(config: InstabilityConfig, root: str | Path, progress: bool = True,
                    executor: Executor | None = None) -> dict[str, Any]:
    """Run (or finish) every pair on ``executor`` (default: this process) and write ``results.json``,
    ``report.md`` and ``instability.png`` under ``root``."""
    root = Path(root)
    owned = executor is None
    executor = local_executor(1) if owned else executor
    try:
        done = run_graph(executor, instability_tasks(config, root, progress and executor.in_process))
    finally:
        if owned:
            executor.close()
    rows, series = [], []
    for bits, src, dst in config.pairs:
        source_cfg = _source_run(config, root, bits, src)
        source = Path(source_cfg.out)
        start = with_subset_accuracy(done[source_cfg.out], source)
        entry: dict[str, Any] = {"bits": bits, "from": src, "to": dst, "source": str(source),
                                 "source_epochs": start.get("epochs")}
        _record(entry, "start", start)
        for role, ste in [("to", dst)] + ([("control", src)] if config.control else []):
            records = _continue(config, root, entry, role, bits, src, ste, done)
            series.append((bits, src, ste, role, start, records))
        rows.append(entry)
    # The minima's own length (a --table1-dir sweep may have fine-tuned for fewer epochs than this config's).
    source_epochs = sorted({e["source_epochs"] for e in rows if e["source_epochs"] is not None})
    results = {"dataset": config.dataset, "model": config.model, "lr": config.switch_lr,
               "epochs": config.switch_epochs, "seed": config.seed,
               "source_epochs": source_epochs[0] if len(source_epochs) == 1 else source_epochs,
               "then_epochs": config.then_epochs, "config": config.to_dict(), "pairs": rows}
    results["findings"] = pair_findings(rows, config.switch_lr)
    write_json(root / "results.json", results)
    write_text(root / "report.md", instability_markdown(results))
    plot_instability(root / "instability.png", series, config.model, config.switch_epochs if config.then_epochs
                     else None)
    return results


def _minima_root(config: InstabilityConfig, root: Path) -> Path:
    return Path(config.table1_dir) if config.table1_dir else root / "minima"


def _float_run(config: InstabilityConfig, root: Path) -> TrainConfig:
    return config.train.replace(quant=None, out=str(float_dir(_minima_root(config, root), config.model, config.seed)))


def _source_run(config: InstabilityConfig, root: Path, bits: int, src: str) -> TrainConfig:
    """The minimum of ``src`` at ``bits``: a Table 1 cell, fine-tuned from the float run."""
    out = cell_dir(_minima_root(config, root), config.model, config.seed, bits, src)
    return config.train.replace(quant=QuantConfig(bits=bits, ste=src), init=_float_run(config, root).out, out=str(out))


def _switch_runs(config: InstabilityConfig, root: Path, bits: int, src: str,
                 ste: str) -> tuple[TrainConfig, TrainConfig | None]:
    """The continuation of the ``src`` minimum with ``ste`` at the switch rate, and (``then_epochs > 0``) phase 2:
    the normal quantized schedule (default rate and milestones) with the same STE."""
    quant = QuantConfig(bits=bits, ste=ste)
    out = root / f"{bits}bit-{src}-to-{ste}"
    cont = config.train.replace(quant=quant, init=_source_run(config, root, bits, src).out, out=str(out),
                                lr=config.switch_lr, epochs=config.switch_epochs, lr_milestones=())
    then = None
    if config.then_epochs:
        then = config.train.replace(quant=quant, init=str(out), out=str(root / f"{bits}bit-{src}-to-{ste}-then"),
                                    epochs=config.then_epochs)
    return cont, then


def _finished(results: dict[str, Any]) -> bool:
    return all(r.get("status") == "finished" for r in results.values())


def instability_tasks(config: InstabilityConfig, root: Path, progress: bool = False) -> list[Task]:
    """The experiment as a graph: float run -> each minimum -> its continuations -> (phase 2, if the continuation
    finished). Runs shared by several pairs (a minimum, a control) are one task. The minima are inputs: a finished
    one is used whatever it was trained with (``check_config=False``)."""
    float_run = _float_run(config, root)
    tasks = [Task(float_run.out, run_or_resume, (float_run, progress, False), lock=f"{float_run.out}/.lock")]
    for bits, src, dst in config.pairs:
        source = _source_run(config, root, bits, src)
        tasks.append(Task(source.out, run_or_resume, (source, progress, False), after=(float_run.out,),
                          lock=f"{source.out}/.lock"))
        for ste in [dst] + ([src] if config.control else []):
            cont, then = _switch_runs(config, root, bits, src, ste)
            tasks.append(Task(cont.out, run_or_resume, (cont, progress), after=(source.out,),
                              lock=f"{cont.out}/.lock"))
            if then is not None:
                tasks.append(Task(then.out, run_or_resume, (then, progress), after=(cont.out,), when=_finished,
                                  why_not="the switched run did not finish", lock=f"{then.out}/.lock"))
    return dedupe(tasks)


def pair_findings(rows: list[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """Per pair, the claim of Yin et al. that the poorer STE is unstable near the better one's minimum: held when
    the training loss after the switch is above the minimum's (and, with a control, above the control's too)."""
    out = []
    for e in rows:
        start, to, control = e.get("start_train_loss"), e.get("to_train_loss"), e.get("control_train_loss")
        if not all(isinstance(v, float) for v in (start, to)):
            continue
        held = to > start and (not isinstance(control, float) or to > control)
        evidence = f"training loss {start:.3e} -> {to:.3e}" + (
            f" (control {e['from']}: {control:.3e})" if isinstance(control, float) else "")
        out.append(finding(f"{e['bits']}:{e['from']}->{e['to']}", f"{e['bits']}-bit: switching {e['from']} -> "
                           f"{e['to']} at rate {lr:g} moves away from the minimum", held, evidence))
    return out


def _record(entry: dict[str, Any], prefix: str, summary: dict[str, Any]) -> None:
    """Copy a run's end figures into ``entry`` under ``prefix`` (the first-1,000 accuracy only where measured)."""
    for key in ("status", "train_loss", "test_acc", "test_acc_first1000"):
        if key in summary or key != "test_acc_first1000":
            entry[f"{prefix}_{key}"] = summary.get(key)


def _continue(config: InstabilityConfig, root: Path, entry: dict[str, Any], role: str, bits: int, src: str,
              ste: str, done: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures of one continuation of the ``src`` minimum with ``ste`` (then the normal schedule when asked),
    from the sweep's results ``done``, into ``entry`` under ``role``; returns its per-epoch records, counted from
    the switch."""
    cont, then = _switch_runs(config, root, bits, src, ste)
    out = Path(cont.out)
    _record(entry, role, with_subset_accuracy(done[cont.out], out))
    records = epoch_records(out)
    if then is not None and then.out in done:
        then_out = Path(then.out)
        _record(entry, f"{role}_then", with_subset_accuracy(done[then.out], then_out))
        records += [{**r, "epoch": r["epoch"] + config.switch_epochs} for r in epoch_records(then_out)]
    return records


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else f"{v:{fmt}}"


def _epochs(n: Any) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def instability_markdown(results: dict[str, Any]) -> str:
    headers = ["bits", "from -> to", "start loss / acc (%)", f"after {results['epochs']} ep. loss / acc (%)",
               "control (same STE) loss / acc (%)"]
    then = results.get("then_epochs", 0)
    if then:
        headers += [f"then {then} ep. loss / acc (%)", "control then loss / acc (%)"]
    rows = []
    for e in results["pairs"]:
        def cell(prefix: str, e=e) -> str:
            if f"{prefix}_train_loss" not in e:
                return "-"
            acc, first = e.get(f"{prefix}_test_acc"), e.get(f"{prefix}_test_acc_first1000")
            text = f"{_f(e[f'{prefix}_train_loss'], '.3e')} / {_f(None if acc is None else 100 * acc, '.2f')}"
            return text + (f" ({100 * first:.1f})" if first is not None else "")

        row = [e["bits"], f"{e['from']} -> {e['to']}", cell("start"), cell("to"), cell("control")]
        if then:
            row += [cell("to_then"), cell("control_then")]
        rows.append(row)
    phase2 = (f" Then {then} epochs of the normal quantized schedule with the same STE ('then' columns)." if then
              else "")
    first = (" In brackets: accuracy on the first 1,000 test images, the only ones identical to the official set "
             "(the others went through JPEG)." if any("start_test_acc_first1000" in e for e in results["pairs"])
             else "")
    return (f"# Instability of the STEs ({results['model']} on {results['dataset']})\n\n"
            f"From the minimum of each 'from' STE ({_epochs(results['source_epochs'])}), {_epochs(results['epochs'])} "
            f"with the 'to' STE at learning rate {results['lr']:g} (constant). Loss: mean training loss of the "
            "epoch; accuracy: test accuracy after it. The control continues with the 'from' STE at the same "
            f"rate.{phase2}{first}{subset_note(results)}\n\n" + markdown_table(headers, rows))


def plot_instability(path: Path, series, model: str, switch_epochs: int | None = None) -> Path | None:
    """Loss and accuracy from each minimum (epoch 0) on; ``switch_epochs`` marks where the normal schedule starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.6))
    colors: dict[tuple[int, str], str] = {}
    for bits, src, ste, role, start, records in series:
        color = colors.setdefault((bits, src), f"C{len(colors)}")
        style = "-" if role == "to" else ":"
        ep = [0] + [r["epoch"] for r in records]
        label = f"{bits}-bit {src} -> {ste}" + (" (control)" if role == "control" else "")
        ax_loss.plot(ep, [start.get("train_loss")] + [r["train_loss"] for r in records], style, color=color,
                     label=label)
        ax_acc.plot(ep, [100 * start.get("test_acc", float("nan"))] + [100 * r["test_acc"] for r in records],
                    style, color=color)
    xlabel = "epochs after the switch (0 = the minimum)"
    ax_loss.set(title=f"{model}: training loss", xlabel=xlabel, yscale="log")
    ax_acc.set(title=f"{model}: test accuracy (%)", xlabel=xlabel)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if switch_epochs is not None:
            ax.axvline(switch_epochs, color="0.4", lw=0.8, ls="--",
                       label="then: the normal schedule, same STE" if ax is ax_loss else None)
    # Below the panels: inside, the legend hid the curves it names.
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return save_figure(fig, path)
