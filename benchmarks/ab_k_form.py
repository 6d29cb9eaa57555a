"""The Tucker convolution's K-form on and off, alternated in one process (thirteenth session).

Usage:  python benchmarks/ab_k_form.py [benchmarks/settled/vgg_small.npz] [--steps 60] [--rounds 3]
        python benchmarks/ab_k_form.py --layer [--rounds 2]

Steps: loads a settled checkpoint twice (``final_ranks.checkpoint_pair``), sets ``k_form = False``
on every Tucker layer of one copy ("off": the three-stage forward; the projector convolves for
its K-steps) and leaves the other at "auto" ("on"), and times ``train_step`` of the dense trainer
and both copies on the same batches in turn (``ab_steps.step_seconds``, lr / 200, seed 2). Prints
per round the medians and the paired ratios on / dense, off / dense and on / off, and the route
each Tucker layer took. ``--layer``: run.py's one-layer ratio (64 -> 64, N = 128, 32 x 32,
``layer_bench.time_layer``) at r = 4, 8, 16, 32 with ``TuckerConv2d.k_form`` False and "auto" in
turn.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from ab_steps import step_seconds  # benchmarks/: this script's folder
from final_ranks import checkpoint_pair

from refdlrt.nn.lowrank_layers import TuckerConv2d

HERE = os.path.dirname(os.path.abspath(__file__))


def steps(checkpoint: str, n: int) -> None:
    de, off = checkpoint_pair(checkpoint)
    _, on = checkpoint_pair(checkpoint, off.data)
    for layer in off.layers:
        if isinstance(layer, TuckerConv2d):
            layer.k_form = False
    s = {m: np.array(v) for m, v in step_seconds({"dense": de, "off": off, "on": on}, off.data, n,
                                                  lr_factor=1 / 200, seed=2).items()}
    routes = ", ".join(f"{ly.name} {type(ly._cache).__name__} {ly.projector().route}"
                       for ly in on.layers if isinstance(ly, TuckerConv2d))
    print(f"dense {1e3 * np.median(s['dense']):.1f} ms, off {1e3 * np.median(s['off']):.1f}, "
          f"on {1e3 * np.median(s['on']):.1f}; paired off / dense {np.median(s['off'] / s['dense']):.3f}, "
          f"on / dense {np.median(s['on'] / s['dense']):.3f}, on / off {np.median(s['on'] / s['off']):.3f}"
          f"  [on: {routes}]", flush=True)


def layer(rounds: int) -> None:
    from layer_bench import layer_data, time_layer  # benchmarks/: this script's folder

    x, dy, w = layer_data()  # run.py's section_layer data
    try:
        for _ in range(rounds):
            for k_form in (False, "auto"):
                TuckerConv2d.k_form = k_form
                out = []
                for r in (4, 8, 16, 32):
                    dense, _, full = time_layer(x, w, dy, r, 3)
                    out.append(f"r = {r}: {full / dense:.3f}")
                print(f"k_form {k_form!s:5}: " + "; ".join(out), flush=True)
    finally:
        TuckerConv2d.k_form = "auto"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=os.path.join(HERE, "settled", "vgg_small.npz"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--layer", action="store_true", help="run.py's one-layer ratio instead")
    a = p.parse_args()
    if a.layer:
        layer(a.rounds)
        return 0
    for _ in range(a.rounds):
        steps(a.checkpoint, a.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
