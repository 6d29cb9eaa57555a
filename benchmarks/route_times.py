"""Per-layer times of a vgg_small TDLRT step by projection route, in one training process.

Usage:  python benchmarks/route_times.py [--steps 96] [--train-size 3072]

Trains vgg_small / tdlrt (CLI defaults otherwise) for one epoch on the first ``--train-size``
embedded images, then takes ``--steps`` more steps, cycling every Tucker layer's
``projection_route`` through auto, dense, plain and blocks (all give the same numbers to
rounding; a test pins them), and prints per layer the median time of its update
(``Trainer._lowrank_update``: projections and ``tdlrt_step``) and of its backward under each
route. Consecutive steps take different routes, so a drift of the machine hits all alike. This
is the measurement behind ``_PASS_COST`` in ``refdlrt/nn/route_cost.py``.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from layer_times import settled_trainer, timed  # benchmarks/ is the script's folder

from refdlrt.nn.lowrank_layers import TuckerConv2d
from refdlrt.training.datasets import load_dataset

ROUTES = ("auto", "dense", "plain", "blocks")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=96)
    p.add_argument("--train-size", type=int, default=3072)
    a = p.parse_args()
    tr = settled_trainer("vgg_small", "tdlrt", load_dataset("embedded"), a.train_size)
    times, current = collections.defaultdict(list), {"route": "auto"}

    tr._lowrank_update = timed(
        tr._lowrank_update,
        lambda dt, k, layer, *_: times[(layer.name, "update", current["route"])].append(dt))
    tucker = [ly for ly in tr.layers if isinstance(ly, TuckerConv2d)]
    for ly in tucker:
        ly.backward = timed(
            ly.backward, lambda dt, *_, n=ly.name: times[(n, "backward", current["route"])].append(dt))
    rng = np.random.default_rng(1)
    for s in range(a.steps):
        current["route"] = ROUTES[s % len(ROUTES)]
        for ly in tucker:
            ly.projection_route = current["route"]
        idx = np.sort(rng.choice(len(tr.data.y_train), tr.cfg.batch_size, replace=False))
        tr.train_step(np.asarray(tr.data.x_train[idx], dtype=np.float32), tr.data.y_train[idx],
                      tr.cfg.lr / 2)
    print(f"vgg_small / tdlrt, ranks {tr.ranks()}; ms, median of {a.steps // len(ROUTES)} steps per route")
    print(f"{'layer':8s} {'part':9s} " + " ".join(f"{r:>7s}" for r in ROUTES))
    for ly in tucker:
        for part in ("update", "backward"):
            cells = " ".join(f"{1e3 * np.median(times[(ly.name, part, r)]):7.1f}" for r in ROUTES)
            print(f"{ly.name:8s} {part:9s} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
