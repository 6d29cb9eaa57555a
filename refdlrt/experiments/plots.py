"""Figures of a sweep (matplotlib, Agg): accuracy against the low-rank parameter fraction, the
rank of each layer over training, the spread of test accuracy over seeds."""

from __future__ import annotations

import json
import os

__all__ = ["write_plots", "PLOTS"]

PLOTS = ("accuracy_vs_params.png", "ranks.png", "seeds.png")
MARKERS = {"dense": "s", "tdlrt": "o", "tdlrt-fixed": "D", "matrix-dlrt": "^", "tucker-direct": "v"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    tmp = f"{path}.tmp{os.getpid()}"
    fig.tight_layout()
    fig.savefig(tmp, dpi=100, format="png")
    os.replace(tmp, path)


def _method(row, fixed):
    return row.get("method", fixed.get("method", "tdlrt"))


def _label(row, skip=("method",)) -> str:
    parts = [f"τ={row['tau']:g}" if k == "tau" else f"{k}={row[k]}"
             for k in row["_axes"] if k not in skip]
    return ", ".join(parts)


# groups this many points or more below the best are listed under the axes, not drawn, so
# that a collapsed baseline (chance level) does not squeeze the others into one line
OFF_AXIS_POINTS = 25.0


def accuracy_vs_params(summary, fixed, path):
    """The paper's figure; returns the groups listed under the axes instead of drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen, off = set(), []
    best = max((100 * r["test_accuracy_mean"] for r in summary if r["test_accuracy_mean"] is not None),
               default=0.0)
    for r in summary:
        if r["test_accuracy_mean"] is None:
            continue
        m = _method(r, fixed)
        if 100 * r["test_accuracy_mean"] < best - OFF_AXIS_POINTS:
            off.append(f"{m}{' (' + _label(r) + ')' if _label(r) else ''}: "
                       f"{100 * r['test_accuracy_mean']:.1f} %")
            continue
        ax.errorbar(100 * r["lowrank_param_fraction_mean"], 100 * r["test_accuracy_mean"],
                    xerr=100 * r["lowrank_param_fraction_std"], yerr=100 * r["test_accuracy_std"],
                    marker=MARKERS.get(m, "o"), color=f"C{list(MARKERS).index(m) if m in MARKERS else 5}",
                    capsize=3, ls="none", label=None if m in seen else m)
        seen.add(m)
        text = _label(r)
        if text:
            ax.annotate(text, (100 * r["lowrank_param_fraction_mean"], 100 * r["test_accuracy_mean"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("low-rank layers' parameters / dense (%)"
                  + ("\nnot shown (far below): " + "; ".join(off) if off else ""))
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    if seen:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return off


def _has_mode(ranks, i: int) -> bool:
    """Whether a layer's rank list has a panel for mode i (a matrix layer [r, r] only mode 0)."""
    return ranks is not None and (i == 0 if len(ranks) == 2 else i < len(ranks))


def ranks_over_training(state, table, path):
    plt = _plt()
    series = {}  # group label -> list of step-rank dicts (one per reported seed)
    for r in table:
        if not (r["reported"] and r["status"] == "ok" and r.get("method", "") != "dense"):
            continue
        try:
            with open(os.path.join(state.out, "cells", r["id"], "history.json")) as f:
                steps = json.load(f)["steps"]
        except (OSError, ValueError, KeyError):
            continue
        if steps and steps[0]["ranks"]:
            series.setdefault(r["group"], []).append(steps)
    panels = []  # (layer, mode)
    for runs in series.values():
        for name, rk in runs[0][0]["ranks"].items():
            for i in range(1 if len(rk) == 2 else len(rk)):
                if (name, i) not in panels:
                    panels.append((name, i))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.2 * max(len(panels), 1), 3.4),
                             squeeze=False)
    for ax, (name, i) in zip(axes[0], panels):
        for k, (label, runs) in enumerate(series.items()):
            if not _has_mode(runs[0][0]["ranks"].get(name), i):  # e.g. conv2 as a matrix
                continue
            n = min(len(s) for s in runs)
            per_epoch = max(sum(1 for s in runs[0] if s["epoch"] == 0), 1)
            mean = [sum(s[j]["ranks"].get(name, [0] * (i + 1))[i] for s in runs) / len(runs)
                    for j in range(n)]
            ax.plot([j / per_epoch for j in range(n)], mean, color=f"C{k % 10}", lw=1, label=label)
        ax.set_title(f"{name}" + (f" mode {i}" if (name, 1) in panels else ""), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("rank (mean over seeds)")
    if panels:
        axes[0][0].legend(fontsize=6)
    else:
        axes[0][0].text(0.5, 0.5, "no low-rank cell finished", ha="center", va="center")
    _save(fig, path)
    plt.close(fig)


def seeds_spread(summary, table, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(summary) + 2), 4))
    for k, g in enumerate(summary):
        acc = [100 * r["test_accuracy"] for r in table
               if r["group"] == g["group"] and r["reported"] and r["status"] == "ok"]
        xs = [k + (j - (len(acc) - 1) / 2) * 0.08 for j in range(len(acc))]
        ax.plot(xs, acc, "o", ms=4, color=f"C{k % 10}")
        if acc:
            ax.hlines(sum(acc) / len(acc), k - 0.3, k + 0.3, color=f"C{k % 10}")
        if g["diverged"]:
            ax.annotate(f"{g['diverged']} diverged", (k, min(acc) if acc else 0), fontsize=7,
                        textcoords="offset points", xytext=(0, -12), ha="center")
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([g["group"].replace(", ", "\n") for g in summary], fontsize=7)
    ax.set_ylabel("test accuracy (%) per seed")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
    plt.close(fig)


def write_plots(state, table, summary):
    """Write the three figures into the sweep folder (each atomically)."""
    axes = []
    for c in state.cells:
        axes += [k for k, _ in c.group if k not in axes]
    rows = [dict(r, _axes=[k for k in axes if k in r]) for r in summary]
    accuracy_vs_params(rows, state.plan.fixed, os.path.join(state.out, PLOTS[0]))
    ranks_over_training(state, table, os.path.join(state.out, PLOTS[1]))
    seeds_spread(summary, table, os.path.join(state.out, PLOTS[2]))
