"""How fast could a TDLRT step be with a free integrator? Dense, TDLRT, and TDLRT whose
integrator is a stand-in that only takes the step's gradient projections, timed in turn.

Usage:  python benchmarks/integrator_bound.py [--model vgg_small] [--steps 40]

The three trainers (CLI defaults, the TDLRT ranks fixed at ab_steps.py's settled ranks) take
``train_step`` on the same random batches after 3 warm-up steps. The stand-in replaces
``tdlrt_step`` for the third one: it asks the layer's projector for what a step asks of it (the
two K-steps' projections onto the old bases and the S-step's, i.e. G itself on the "dense" route)
and returns the weight and the velocity unchanged. No QR, SVD, eigh, lift or truncation is
taken, so its step time is a lower bound for any speed-up of the integrator's small linear
algebra; TDLRT minus it is what that linear algebra costs inside a real step. (On a projector's
"plain" or "blocks" route the stand-in's ``project`` calls cost more than the K-steps' own
contractions, so there the bound is loose; the settled ranks of both models take the "dense"
route.)
"""

from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_steps import ONE_EPOCH_RANKS, step_seconds  # noqa: E402

import refdlrt.training.trainer as trainer_mod  # noqa: E402
from refdlrt.training.datasets import load_embedded_mnist  # noqa: E402
from refdlrt.training.trainer import TrainConfig, Trainer  # noqa: E402


def projections_only(Y, grad, lr, tau, *, velocity=None, **_):
    """The stand-in: the step's projections of G, then Y and the velocity unchanged."""
    Us = list(Y.factors)
    for i in range(min(2, Y.ndim)):  # the K-steps of modes 0 and 1 (the others are square here)
        grad.project([None if j == i else U for j, U in enumerate(Us)])
    grad.project(Us)  # the S-step's, at the old bases
    return Y, SimpleNamespace(velocity=velocity)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg_small", choices=sorted(ONE_EPOCH_RANKS))
    p.add_argument("--steps", type=int, default=40)
    a = p.parse_args()
    data = load_embedded_mnist()
    kinds = ("dense", "tdlrt", "tdlrt, integrator free")
    trainers = {k: Trainer(TrainConfig(model=a.model, method="dense" if k == "dense" else "tdlrt",
                                       ranks=None if k == "dense" else ONE_EPOCH_RANKS[a.model]), data)
                for k in kinds}
    real_step = trainer_mod.tdlrt_step

    def swap(k):
        trainer_mod.tdlrt_step = projections_only if k.endswith("free") else real_step

    try:
        seconds = step_seconds(trainers, data, a.steps, before=swap)
    finally:
        trainer_mod.tdlrt_step = real_step
    dense = float(np.median(seconds["dense"]))
    print(f"{a.model}: median ms per step of {a.steps}, and / dense")
    for k in kinds:
        t = float(np.median(seconds[k]))
        print(f"  {k:24s} {1e3 * t:7.1f} ms  {t / dense:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
