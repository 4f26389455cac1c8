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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import QuantConfig
from ...io import markdown_table, save_figure, write_json, write_text
from ...train import TrainConfig, epoch_records
from .table1 import cell_dir, float_dir, run_or_resume, scaled_epochs

# The paper's three switches, named literally: each pair is one specific (good -> poorer) STE transition.
DEFAULT_PAIRS = ((4, "relu", "identity"), (4, "clipped_relu", "identity"), (2, "clipped_relu", "relu"))


def run_instability(root: str | Path, *, dataset: str = "mnist", model: str = "lenet5",
                    pairs: Sequence[tuple[int, str, str]] = DEFAULT_PAIRS, switch_lr: float = 1e-5,
                    switch_epochs: int = 20,
                    seed: int = 0, table1_dir: str | Path | None = None, epochs_scale: float = 1.0,
                    control: bool = True, then_epochs: int = 0, progress: bool = True,
                    **train_fields: Any) -> dict[str, Any]:
    if then_epochs < 0:
        raise ValueError(f"then_epochs must be >= 0, got {then_epochs}")
    root = Path(root)
    source_root = Path(table1_dir) if table1_dir else root / "minima"
    base = TrainConfig(model=model, dataset=dataset, seed=seed, epochs=scaled_epochs(model, epochs_scale),
                       **train_fields)
    float_run = float_dir(source_root, model, seed)
    run_or_resume(base.replace(quant=None, out=str(float_run)), progress)
    rows, series = [], []
    for bits, src, dst in pairs:
        source = cell_dir(source_root, model, seed, bits, src)
        start = run_or_resume(base.replace(quant=QuantConfig(bits=bits, ste=src), init=str(float_run),
                                           out=str(source)), progress)
        entry: dict[str, Any] = {"bits": bits, "from": src, "to": dst, "source": str(source),
                                 "start_train_loss": start.get("train_loss"), "start_test_acc": start.get("test_acc")}
        targets = [("to", dst)] + ([("control", src)] if control else [])
        for role, ste in targets:
            out = root / f"{bits}bit-{src}-to-{ste}"
            cont = base.replace(quant=QuantConfig(bits=bits, ste=ste), init=str(source), out=str(out), lr=switch_lr,
                                epochs=switch_epochs,
                                lr_milestones=())
            summary = run_or_resume(cont, progress)
            entry[f"{role}_status"] = summary.get("status")
            entry[f"{role}_train_loss"] = summary.get("train_loss")
            entry[f"{role}_test_acc"] = summary.get("test_acc")
            records = epoch_records(out)
            if then_epochs and summary.get("status") == "finished":
                # Phase 2: the normal quantized schedule (default rate and milestones) with the same STE.
                then_out = root / f"{bits}bit-{src}-to-{ste}-then"
                then = run_or_resume(base.replace(quant=QuantConfig(bits=bits, ste=ste), init=str(out),
                                                  out=str(then_out), epochs=then_epochs), progress)
                entry[f"{role}_then_status"] = then.get("status")
                entry[f"{role}_then_train_loss"] = then.get("train_loss")
                entry[f"{role}_then_test_acc"] = then.get("test_acc")
                records += [{**r, "epoch": r["epoch"] + switch_epochs} for r in epoch_records(then_out)]
            series.append((bits, src, ste, role, start, records))
        rows.append(entry)
    results = {"dataset": dataset, "model": model, "lr": switch_lr, "epochs": switch_epochs, "seed": seed,
               "source_epochs": base.resolved_epochs(), "then_epochs": then_epochs, "pairs": rows}
    write_json(root / "results.json", results)
    write_text(root / "report.md", instability_markdown(results))
    plot_instability(root / "instability.png", series, model)
    return results


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else f"{v:{fmt}}"


def instability_markdown(results: dict[str, Any]) -> str:
    headers = ["bits", "from -> to", "start loss / acc (%)", f"after {results['epochs']} ep. loss / acc (%)",
               "control (same STE) loss / acc (%)"]
    then = results.get("then_epochs", 0)
    if then:
        headers += [f"then {then} ep. loss / acc (%)", "control then loss / acc (%)"]
    rows = []
    for e in results["pairs"]:
        def cell(prefix: str, e=e) -> str:
            acc = e.get(f"{prefix}_test_acc")
            return f"{_f(e.get(f'{prefix}_train_loss'), '.3e')} / {_f(None if acc is None else 100 * acc, '.2f')}"

        row = [e["bits"], f"{e['from']} -> {e['to']}", cell("start"), cell("to"),
               cell("control") if "control_train_loss" in e else "-"]
        if then:
            row += [cell("to_then"), cell("control_then") if "control_then_train_loss" in e else "-"]
        rows.append(row)
    phase2 = (f" Then {then} epochs of the normal quantized schedule with the same STE ('then' columns)." if then
              else "")
    return (f"# Instability of the STEs ({results['model']} on {results['dataset']})\n\n"
            f"From the minimum of each 'from' STE ({results['source_epochs']} epochs), {results['epochs']} epochs "
            f"with the 'to' STE at learning rate {results['lr']:g} (constant). Loss: mean training loss of the "
            "epoch; accuracy: test accuracy after it. The control continues with the 'from' STE at the same "
            f"rate.{phase2}\n\n" + markdown_table(headers, rows))


def plot_instability(path: Path, series, model: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors: dict[tuple[int, str], str] = {}
    for bits, src, ste, role, start, records in series:
        color = colors.setdefault((bits, src), f"C{len(colors)}")
        style = "-" if role == "to" else ":"
        ep = [0] + [r["epoch"] for r in records]
        label = f"{bits}-bit {src} -> {ste}" + (" (control)" if role == "control" else "")
        ax_loss.plot(ep, [start.get("train_loss")] + [r["train_loss"] for r in records], style, color=color,
                     label=label)
        ax_acc.plot(ep, [100 * start.get("test_acc", float("nan"))] + [100 * r["test_acc"] for r in records],
                    style, color=color, label=label)
    ax_loss.set(title=f"{model}: training loss", xlabel="epochs after the switch (0 = the minimum)", yscale="log")
    ax_acc.set(title=f"{model}: test accuracy (%)", xlabel="epochs after the switch (0 = the minimum)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    return save_figure(fig, path)
