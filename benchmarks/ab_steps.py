"""Training steps of two checkouts, dense and TDLRT interleaved, the checkouts alternated in fresh
processes: did a change make the TDLRT / dense ratio better, or is the machine in another phase?

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_steps.py /tmp/old . [--model lenet5] [--steps 40] [--rounds 3]

Each round runs ``--child`` once per checkout, in that order. A child imports refdlrt from its
checkout, builds a dense and a TDLRT trainer (CLI defaults, the TDLRT ranks fixed at those a
one-epoch run of the defaults ends at, ``ONE_EPOCH_RANKS``, from a run.py run of 2026-11-30; a full
15-epoch run settles lower, see benchmarks/settled/README.md) and times
``train_step`` on the same random batches, dense and TDLRT in turn, after 3 warm-up steps. It
prints the medians and their ratio. ``--model layer`` times run.py's one-layer measurement
instead (``layer_bench.time_layer``, 64 -> 64, N = 128, 32 x 32, at r = 8 and 16; ``--steps``
repeats), and prints (TDLRT step / dense f+b) per rank.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ONE_EPOCH_RANKS = {
    "lenet5": {"conv2": (12, 6, 5, 5), "fc1": (19, 19), "fc2": (18, 18)},
    "vgg_small": {"conv2": (15, 15, 3, 3), "conv3": (17, 16, 3, 3), "conv4": (16, 16, 3, 3),
                  "fc1": (18, 18)},
}


def step_seconds(trainers: dict, data, steps: int, before=None, *, lr_factor: float = 0.5,
                 seed: int = 0) -> dict:
    """Seconds of ``train_step`` per trainer: the same random batches (``seed``) for all, taken in
    turn, after 3 warm-up steps, at ``lr_factor`` times the configured learning rate;
    ``before(name)`` runs before each trainer's step, off the clock (shared with
    integrator_bound.py, width_scaling.py, final_ranks.py and run.py's "settled" section)."""
    import numpy as np

    rng, seconds = np.random.default_rng(seed), {m: [] for m in trainers}
    batch = next(iter(trainers.values())).cfg.batch_size
    for i in range(steps + 3):
        idx = np.sort(rng.choice(len(data.y_train), batch, replace=False))
        xb, yb = np.asarray(data.x_train[idx], dtype=np.float32), data.y_train[idx]
        for m, tr in trainers.items():
            if before is not None:
                before(m)
            t0 = time.perf_counter()
            tr.train_step(xb, yb, tr.cfg.lr * lr_factor)
            if i >= 3:
                seconds[m].append(time.perf_counter() - t0)
    return seconds


def layer_child(root: str, repeats: int) -> None:
    """run.py's one-layer ratio at r = 8 and 16, with ``root``'s refdlrt (already on the path)."""
    from layer_bench import layer_data, time_layer  # benchmarks/: this script's folder

    import refdlrt

    x, dy, w = layer_data()  # run.py's section_layer data
    out = []
    for r in (8, 16):
        dense, _, full = time_layer(x, w, dy, r, repeats)
        out.append(f"r = {r}: {1e3 * full:.1f} / {1e3 * dense:.1f} ms = {full / dense:.3f}")
    print(f"{os.path.dirname(refdlrt.__file__)} layer: " + "; ".join(out), flush=True)


def child(root: str, model: str, steps: int) -> None:
    sys.path.insert(0, os.path.abspath(root))
    if model == "layer":
        layer_child(root, steps)
        return
    import numpy as np

    import refdlrt
    from refdlrt.training.datasets import load_embedded_mnist
    from refdlrt.training.trainer import TrainConfig, Trainer

    data = load_embedded_mnist()
    trainers = {m: Trainer(TrainConfig(model=model, method=m,
                                       ranks=ONE_EPOCH_RANKS[model] if m == "tdlrt" else None), data)
                for m in ("dense", "tdlrt")}
    seconds = step_seconds(trainers, data, steps)
    dense, tdlrt = (1e3 * float(np.median(seconds[m])) for m in ("dense", "tdlrt"))
    print(f"{os.path.dirname(refdlrt.__file__)} {model}: dense {dense:.1f} ms, tdlrt {tdlrt:.1f} ms, "
          f"ratio {tdlrt / dense:.3f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", help="checkouts to compare")
    p.add_argument("--model", default="lenet5", choices=sorted(ONE_EPOCH_RANKS) + ["layer"])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.model, a.steps)
        return 0
    if len(a.roots) < 2:
        p.error("expected at least two checkouts")
    for _ in range(a.rounds):
        for root in a.roots:
            subprocess.run([sys.executable, __file__, "--child", root, "--model", a.model,
                            "--steps", str(a.steps)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
