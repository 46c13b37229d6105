"""What a run tells people: the line per epoch, the summary, ``curves.png`` and the mixing on/off table."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from ..system import write_figure


def count(number: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def epoch_line(record: dict, epochs: int) -> str:
    mixing = "" if record["mixing"] else "  (no mixing)"
    return (f"epoch {record['epoch']:>3}/{epochs}  train loss {record['train_loss']:.4f}  "
            f"{record['train_images_per_s']:>6.0f} img/s  data wait {100 * record['data_wait_share']:4.1f}%  "
            f"val acc {100 * record['val_acc']:6.2f}%  val loss {record['val_loss']:.4f}  "
            f"{record['seconds']:6.1f} s{mixing}")


def run_totals(history: List[dict]) -> dict:
    """Figures of a whole run: training seconds, train images/s and data-wait share over all its epochs."""
    train_seconds = sum(r["train_seconds"] for r in history)
    return {"epochs": len(history), "val_acc": history[-1]["val_acc"], "train_seconds": train_seconds,
            "elapsed": history[-1]["elapsed"],
            "train_images_per_s": sum(r["train_images"] for r in history) / train_seconds,
            "data_wait_share": sum(r["data_wait_share"] * r["train_seconds"] for r in history) / train_seconds}


def summary_line(history: List[dict], best: dict, run_dir: Path) -> str:
    totals = run_totals(history)
    return (f"done: {count(totals['epochs'], 'epoch')} in {totals['elapsed']:.1f} s "
            f"({totals['train_images_per_s']:.0f} train img/s, {100 * totals['data_wait_share']:.1f}% of step time waiting for data); final val acc "
            f"{100 * totals['val_acc']:.2f}% (best {100 * best['val_acc']:.2f}% at epoch {best['epoch']}); "
            f"{run_dir}")


def comparison_table(rows: Sequence[dict]) -> str:
    """A Markdown table of runs; each row is ``run_totals`` plus a ``mixing`` label."""
    lines = ["| mixing | test accuracy | training s | train images/s | data wait |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['mixing']} | {100 * row['val_acc']:.2f}% | {row['train_seconds']:.0f} | "
                     f"{row['train_images_per_s']:,.0f} | {100 * row['data_wait_share']:.1f}% |")
    return "\n".join(lines)


def plot_curves(history: List[dict], path: Path) -> None:
    """curves.png: training and validation loss, and validation accuracy, per epoch."""

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train (on its targets)")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.plot(epochs, [100 * r["val_acc"] for r in history], marker="o", color="tab:green")
    acc_ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="validation accuracy")
    unmixed = [r["epoch"] for r in history if not r["mixing"]]
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if unmixed and len(unmixed) < len(history):  # mark --mix-off-epoch: the train loss drops there
            ax.axvspan(min(unmixed) - 0.5, max(unmixed) + 0.5, color="grey", alpha=0.15, label="no mixing")
    loss_ax.legend()
    fig.tight_layout()
    try:
        write_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
