"""Conv f+b of two checkouts against PyTorch, alternated in fresh processes (a drift of the
machine hits both alike): is a change a regression, or is the machine in a slow phase?

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_conv.py /tmp/old . [--rounds 3]

Each round runs ``--child`` once per checkout, in that order; each child imports refdlrt from
its checkout and prints the median of 7 interleaved (ours, torch) pairs on the conv benchmark's
shape (N = 128, 64 -> 64, 32x32, 3x3, pad 1, float32).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def child(root: str) -> None:
    sys.path.insert(0, os.path.abspath(root))
    import numpy as np
    import torch

    import refdlrt
    from refdlrt.ops.conv import conv2d_backward, conv2d_forward

    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 64, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    dy = rng.standard_normal((128, 64, 32, 32)).astype(np.float32)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    dyt = torch.from_numpy(dy)

    def ours():
        t0 = time.perf_counter()
        _, cache = conv2d_forward(x, w, b, padding=1)
        conv2d_backward(dy, cache)
        return time.perf_counter() - t0

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        t0 = time.perf_counter()
        torch.nn.functional.conv2d(xt, wt, bt, padding=1).backward(dyt)
        return time.perf_counter() - t0

    ours(), theirs()  # warm-up
    s = np.array([(ours(), theirs()) for _ in range(7)])
    m = np.median(s, axis=0)
    print(f"{os.path.dirname(refdlrt.__file__)}: ours {1e3 * m[0]:.0f} ms, torch {1e3 * m[1]:.0f} ms, "
          f"ratio {m[0] / m[1]:.2f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", help="checkouts to compare")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child)
        return 0
    if len(a.roots) < 2:
        p.error("expected at least two checkouts")
    for _ in range(a.rounds):
        for root in a.roots:
            subprocess.run([sys.executable, __file__, "--child", root], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
