"""Paired dense / TDLRT training steps at the ranks a full training run settled at.

Usage:  refdlrt train --model vgg_small --out RUN          # CLI defaults: 15 epochs
        python benchmarks/final_ranks.py RUN/checkpoint.npz [--steps 80]

``run.py`` times TDLRT after one epoch; this loads the checkpoint of a finished run (its weights,
ranks and optimizer state), builds a dense trainer of the same model, and times ``train_step`` on
the same random batches, dense and TDLRT in turn, after 3 warm-up steps (learning rate lr / 200,
so that the steps barely move the weights). The dense trainer takes the run's configuration
with ``method="dense"`` (same model, widths, batch size, data); the TDLRT trainer is set to its
last rank-adaptive epoch (before any fine-tune epochs), so its steps truncate as in training. It prints the
medians and the paired ratio (median over batches of TDLRT / dense).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from ab_steps import step_seconds  # benchmarks/: this script's folder

from refdlrt.training.datasets import load_dataset
from refdlrt.training.trainer import Trainer


def checkpoint_pair(checkpoint: str, data=None) -> tuple:
    """(dense, tdlrt) trainers: the TDLRT run of ``checkpoint`` (its weights, ranks and optimizer
    state) set to its last rank-adaptive epoch, and a dense trainer of its configuration with
    ``method="dense"``. ``data``: the run's dataset (default: loaded by the name in its
    configuration). Shared with run.py's "settled" section."""
    if data is None:
        data = load_dataset(Trainer.read_meta(checkpoint)["config"]["data"])
    td = Trainer.load(checkpoint, data)
    td.epoch = max(td.cfg.warmup_epochs, td.cfg.epochs - td.cfg.finetune_epochs - 1)  # adaptive
    de = Trainer(dataclasses.replace(td.cfg, method="dense", ranks={}, layer_r_max={}), data)
    return de, td


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint.npz of a finished TDLRT run on the embedded data")
    p.add_argument("--steps", type=int, default=80)
    a = p.parse_args()
    de, td = checkpoint_pair(a.checkpoint)
    print("ranks before", td.ranks())
    seconds = step_seconds({"dense": de, "tdlrt": td}, td.data, a.steps, lr_factor=1 / 200, seed=2)
    ratios = np.array(seconds["tdlrt"]) / np.array(seconds["dense"])
    print(f"{td.cfg.model}: dense {1e3 * np.median(seconds['dense']):.1f} ms, "
          f"tdlrt {1e3 * np.median(seconds['tdlrt']):.1f} ms, paired {np.median(ratios):.3f}")
    print("ranks after", td.ranks())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
