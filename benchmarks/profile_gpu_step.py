"""Where a TDLRT training step spends its time on CuPy: cProfile of 20 steps (vgg_small, CLI
defaults, after one epoch of 1,024 images), sorted by own time. GPU work is asynchronous, so
the wait for it shows at the synchronising calls (a host copy, ``float``, ``int``, ``bool`` of
a device array); the rest is host-side launch and Python overhead.

    python benchmarks/profile_gpu_step.py [--model vgg_small] [--method tdlrt] [--top 35]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg_small")
    ap.add_argument("--method", default="tdlrt")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=35)
    args = ap.parse_args(argv)

    import cupy

    from refdlrt.training.datasets import load_dataset
    from refdlrt.training.trainer import TrainConfig, Trainer

    tr = Trainer(TrainConfig(model=args.model, method=args.method, epochs=1, train_size=1024,
                             backend="cupy"), load_dataset("embedded"))
    tr.run_epoch()
    rng = np.random.default_rng(1)
    batches = [np.sort(rng.choice(len(tr.data.y_train), tr.cfg.batch_size, replace=False))
               for _ in range(args.steps)]

    def steps():
        for idx in batches:
            tr.train_step(cupy.asarray(tr.data.x_train[idx], dtype=tr.dtype),
                          cupy.asarray(tr.data.y_train[idx]), tr.cfg.lr / 2)
        cupy.cuda.Device().synchronize()

    steps()  # warm
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(steps)
    wall = time.perf_counter() - t0
    print(f"{args.model} {args.method} on CuPy: {1e3 * wall / args.steps:.1f} ms per step "
          f"(under cProfile), ranks {tr.ranks()}")
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
    print(s.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
