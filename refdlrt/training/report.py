"""What a training run leaves in its output folder: summary.json, history (JSON and CSV),
plots (loss and accuracy, ranks per layer, parameters over time), and a printed table."""

from __future__ import annotations

import csv
import json
import os

from .runs import mark_complete, write_json_atomic

__all__ = ["summarize", "write_run", "format_summary"]


def summarize(trainer) -> dict:
    """The run's summary: the fields documented in the README's CLI section."""
    last = trainer.history[-1]
    seconds = [h["seconds"] for h in trainer.history]
    return dict(
        method=trainer.cfg.method,
        model=trainer.cfg.model,
        tau=trainer.cfg.tau,
        seed=trainer.cfg.seed,
        epochs=len(trainer.history),
        test_accuracy=last["test_accuracy"],
        test_loss=last["test_loss"],
        val_accuracy=last.get("val_accuracy"),  # None without a validation split (val_fraction 0)
        train_loss=last["train_loss"],
        train_accuracy=last["train_accuracy"],
        ranks=last["ranks"],
        lowrank_params=last["lowrank_params"],
        lowrank_param_fraction=last["lowrank_param_fraction"],
        conv_compression=last["conv_compression"],
        seconds_per_epoch=sum(seconds) / len(seconds),
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(trainer.cfg).items()},
    )


def _write_csv(path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([json.dumps(r[c]) if isinstance(r[c], (dict, list)) else r[c] for c in columns])


def _plots(out, history, steps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([s["loss"] for s in steps], lw=0.6, label="train loss (per step)")
    a.set_xlabel("step"), a.set_ylabel("loss"), a.set_yscale("log"), a.legend()
    b.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    if "val_accuracy" in history[-1]:
        b.plot(ep, [h["val_accuracy"] for h in history], "^-", label="validation")
    b.plot(ep, [h["test_accuracy"] for h in history], "s-", label="test")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend()
    fig.tight_layout(), fig.savefig(os.path.join(out, "loss_accuracy.png"), dpi=100), plt.close(fig)

    names = list(steps[0]["ranks"]) if steps else []
    if names:
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
        for ax, name in zip(axes[0], names):
            rk = [s["ranks"][name] for s in steps]
            for i in range(len(rk[0])):
                ax.plot([r[i] for r in rk], label=f"mode {i}")
            ax.set_title(name), ax.set_xlabel("step"), ax.set_ylabel("rank"), ax.legend(fontsize=7)
        fig.tight_layout(), fig.savefig(os.path.join(out, "ranks.png"), dpi=100), plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ep, [h["lowrank_param_fraction"] for h in history], "o-", label="low-rank / dense params")
    ax.plot(ep, [1 - h["conv_compression"] for h in history], "s-", label="conv params / dense conv")
    ax.set_xlabel("epoch"), ax.set_ylabel("fraction"), ax.set_ylim(0, 1.05), ax.legend()
    fig.tight_layout(), fig.savefig(os.path.join(out, "params.png"), dpi=100), plt.close(fig)


RUN_OUTPUTS = ("history.json", "history.csv", "steps.csv", "loss_accuracy.png", "ranks.png",
               "params.png", "checkpoint.npz", "summary.json")


def write_run(trainer, out: str, *, plots: bool = True) -> dict:
    """Write history.json/.csv, steps.csv and the plots (unless ``plots`` is false) into ``out``,
    then summary.json last and atomically: its presence marks the run complete (INCOMPLETE is
    removed after it)."""
    os.makedirs(out, exist_ok=True)
    summary = summarize(trainer)
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(dict(epochs=trainer.history, steps=trainer.steps), f)
    val = ["val_loss", "val_accuracy"] if "val_accuracy" in trainer.history[-1] else []
    cols = ["epoch", "lr", "train_loss", "train_accuracy", *val, "test_loss", "test_accuracy",
            "seconds", "lowrank_param_fraction", "conv_compression", "ranks"]
    _write_csv(os.path.join(out, "history.csv"), trainer.history, cols)
    _write_csv(os.path.join(out, "steps.csv"), trainer.steps, ["epoch", "step", "lr", "loss", "seconds", "ranks"])
    if plots:
        _plots(out, trainer.history, trainer.steps)
    write_json_atomic(os.path.join(out, "summary.json"), summary)
    mark_complete(out)
    return summary


def format_summary(summary: dict) -> str:
    """A small table for the terminal."""
    rows = [
        ("method", summary["method"]),
        ("test accuracy", f"{100 * summary['test_accuracy']:.2f} %"),
    ] + ([("validation accuracy", f"{100 * summary['val_accuracy']:.2f} %")]
         if summary.get("val_accuracy") is not None else []) + [
        ("train loss", f"{summary['train_loss']:.4f}"),
        ("low-rank params / dense", f"{100 * summary['lowrank_param_fraction']:.1f} %"),
        ("conv compression", f"{100 * summary['conv_compression']:.1f} %"),
        ("seconds per epoch", f"{summary['seconds_per_epoch']:.2f}"),
    ] + [(f"ranks {k}", str(tuple(v))) for k, v in summary["ranks"].items()]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
