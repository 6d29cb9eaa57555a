"""Claim 8: accuracy against compression on embedded MNIST, TDLRT against the baselines.

Claim, quick mode (2,000 training images, one epoch: what a minute of training can honestly
show): TDLRT's mean test accuracy over the seeds at τ = 0.1 is at least 70 % and at most 15
points below the dense network's; at τ = 0.2 it keeps at most 35 % of the low-rank layers'
dense parameters and still reaches 45 %; larger τ keeps fewer parameters.

Claim, full mode (LeNet5 on the 8,000 / 2,000 embedded split, five epochs, three seeds): TDLRT's
mean test accuracy at τ <= 0.1 is at most 3 points below dense and at least 93 %; at τ = 0.2 it
is at least 90 % keeping at most 35 % of the parameters, at τ = 0.3 at least 85 % keeping at
most 20 %; larger τ keeps fewer parameters. (Measured with seed 0: dense 97.4 %; TDLRT 95.7,
95.5, 93.5, 89.4 % at τ = 0.05, 0.1, 0.2, 0.3, keeping 75, 69, 22, 10 % of the parameters.)

The matrix-DLRT and direct-Tucker baselines are trained alongside and plotted (accuracy against
conv compression, mean ± standard deviation over seeds); they are reported, not checked. Runs
use ``refdlrt.training.trainer.Trainer`` in float32 (the trainer's default dtype; these are statistics of
training, not identities) with the settings of ``QUICK`` / ``FULL``, which start the low-rank
layers at half rank (the thresholds were set with that start); they do not follow the defaults
of ``refdlrt train``.
"""

from __future__ import annotations

import math

import numpy as np

from ..training.datasets import load_embedded_mnist
from ..training.trainer import TrainConfig, Trainer, TrainingDiverged
from . import Check, ClaimResult
from ._common import pyplot, save

NAME = "training"
QUICK = dict(init_rank=0.5, n_train=2000, n_test=500, epochs=1, batch_size=32, lr=0.02, momentum=0.9, seeds=2, taus=(0.1, 0.2),
             min_accuracy={0.1: 0.70, 0.2: 0.45}, max_gap={0.1: 0.15}, max_fraction={0.2: 0.35})
FULL = dict(init_rank=0.5, n_train=8000, n_test=2000, epochs=5, batch_size=64, lr=0.02, momentum=0.9, seeds=3,
            taus=(0.05, 0.1, 0.2, 0.3), min_accuracy={0.05: 0.93, 0.1: 0.93, 0.2: 0.90, 0.3: 0.85},
            max_gap={0.05: 0.03, 0.1: 0.03}, max_fraction={0.2: 0.35, 0.3: 0.20})
CLAIM = ("Quick (2,000 images, 1 epoch): TDLRT mean test accuracy >= 70 % at tau = 0.1, within 15 "
         "points of dense; at tau = 0.2 <= 35 % of the low-rank parameters kept and >= 45 % "
         "accuracy; larger tau keeps fewer parameters. Full: within 3 points of dense at "
         "tau <= 0.1; >= 90 % with <= 35 % of the parameters at tau = 0.2, >= 85 % with <= 20 % "
         "at tau = 0.3.")


def train_one(method, tau, seed, ds, cfg, *, backend="numpy", max_steps=None):
    """One training run; returns its summary (diverged runs get accuracy 0.1, chance level)."""
    tc = TrainConfig(model="lenet5", method=method, tau=tau, epochs=cfg["epochs"],
                     batch_size=cfg["batch_size"], lr=cfg["lr"], momentum=cfg["momentum"], seed=seed,
                     init_rank=cfg["init_rank"],
                     backend=backend)
    tr = Trainer(tc, ds)
    row, diverged = None, False
    try:
        for _ in range(cfg["epochs"]):
            row = tr.run_epoch()
            if max_steps is not None and len(tr.steps) >= max_steps:
                break
    except TrainingDiverged:
        diverged = True
    losses = [s["loss"] for s in tr.steps]
    if diverged or row is None:
        return dict(method=method, tau=tau, seed=seed, accuracy=0.1, fraction=math.nan,
                    compression=math.nan, diverged=True, losses=losses)
    return dict(method=method, tau=tau, seed=seed, accuracy=row["test_accuracy"],
                fraction=row["lowrank_param_fraction"], compression=row["conv_compression"],
                ranks=row["ranks"], diverged=False, losses=losses)


def _grid(cfg, seed, backend):
    ds = load_embedded_mnist(n_train=cfg["n_train"], n_test=cfg["n_test"], seed=seed)
    runs = []
    for s in range(seed, seed + cfg["seeds"]):
        runs.append(train_one("dense", 0.0, s, ds, cfg, backend=backend))
        for tau in cfg["taus"]:
            runs.append(train_one("tdlrt", tau, s, ds, cfg, backend=backend))
        runs.append(train_one("matrix-dlrt", 0.1, s, ds, cfg, backend=backend))
        runs.append(train_one("tucker-direct", 0.1, s, ds, cfg, backend=backend))
    return runs


def _stats(runs, method, tau=None):
    sel = [r for r in runs if r["method"] == method and (tau is None or r["tau"] == tau)]
    acc = np.array([r["accuracy"] for r in sel])
    frac = np.array([r["fraction"] for r in sel])
    comp = np.array([r["compression"] for r in sel])
    return dict(acc=float(acc.mean()), acc_std=float(acc.std()), fraction=float(np.nanmean(frac))
                if np.isfinite(frac).any() else math.nan,
                compression=float(np.nanmean(comp)) if np.isfinite(comp).any() else math.nan,
                compression_std=float(np.nanstd(comp)) if np.isfinite(comp).any() else math.nan,
                diverged=int(sum(r["diverged"] for r in sel)), n=len(sel))


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    backend = "numpy" if xp is np else "cupy"
    cfg = QUICK if quick else FULL
    runs = _grid(cfg, seed, backend)
    dense = _stats(runs, "dense")
    tdlrt = {tau: _stats(runs, "tdlrt", tau) for tau in cfg["taus"]}
    checks = []
    for tau, st in tdlrt.items():
        if tau in cfg["min_accuracy"]:
            checks.append(Check(f"tau={tau:g}: TDLRT mean test accuracy", st["acc"],
                                cfg["min_accuracy"][tau], ">="))
        if tau in cfg["max_gap"]:
            checks.append(Check(f"tau={tau:g}: TDLRT mean accuracy vs dense ({dense['acc']:.3f}) "
                                f"- {cfg['max_gap'][tau]:g}", st["acc"],
                                dense["acc"] - cfg["max_gap"][tau], ">="))
        if tau in cfg["max_fraction"]:
            checks.append(Check(f"tau={tau:g}: fraction of the low-rank layers' parameters kept",
                                st["fraction"], cfg["max_fraction"][tau]))
    fr = [tdlrt[t]["fraction"] for t in cfg["taus"]]
    checks.append(Check("larger tau keeps fewer parameters: increases of the kept fraction",
                        sum(not b < a for a, b in zip(fr, fr[1:])), 0))
    baselines = {m: _stats(runs, m) for m in ("matrix-dlrt", "tucker-direct")}
    details = dict(config=cfg, dense=dense, tdlrt={str(k): v for k, v in tdlrt.items()},
                   baselines=baselines,
                   runs=[{k: v for k, v in r.items() if k != "losses"} for r in runs],
                   notes=[f"{m}: mean accuracy {v['acc']:.3f} ± {v['acc_std']:.3f}, conv "
                          f"compression {v['compression']:.3f}, {v['diverged']} of {v['n']} runs "
                          "diverged" for m, v in baselines.items()])
    return ClaimResult.from_checks(NAME, CLAIM, checks, details,
                                   [_plot(dense, tdlrt, baselines, out)])


def _plot(dense, tdlrt, baselines, out):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, key, xlabel in ((axes[0], "compression", "conv compression (1 - kept / dense conv "
                             "parameters)"),
                            (axes[1], "fraction", "compression of the low-rank layers "
                             "(1 - kept fraction)")):
        ax.axhline(dense["acc"], color="k", lw=1, label=f"dense ({dense['acc']:.3f})")
        ax.axhspan(dense["acc"] - dense["acc_std"], dense["acc"] + dense["acc_std"], color="k",
                   alpha=0.1)

        def x_of(v, key=key):
            return v["compression"] if key == "compression" else 1.0 - v["fraction"]

        xs = [x_of(v) for v in tdlrt.values()]
        ax.errorbar(xs, [v["acc"] for v in tdlrt.values()],
                    yerr=[v["acc_std"] for v in tdlrt.values()], fmt="o-", capsize=3,
                    label="TDLRT")
        for x, (tau, v) in zip(xs, tdlrt.items()):
            ax.annotate(f"tau={tau:g}", (x, v["acc"]), fontsize=7, textcoords="offset points",
                        xytext=(4, -10))
        for (m, v), mk in zip(baselines.items(), "s^"):
            ax.errorbar([x_of(v)], [v["acc"]], yerr=[v["acc_std"]], fmt=mk, capsize=3, label=m)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("test accuracy (mean ± std over seeds)")
    fig.suptitle("Claim 8: LeNet5 on embedded MNIST")
    return save(fig, out, "08_training.png")
