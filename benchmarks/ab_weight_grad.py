"""The kernel gradient alone (conv2d_weight_grad) of two checkouts, alternated in one process.

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_weight_grad.py [/tmp/old .]

Each checkout's refdlrt is imported under a package name of its own; per shape (vgg_small's,
LeNet5's second convolution's, run.py's layer's, in float32 and float64), three rounds of the
two in alternating order, each the median of 5 calls; prints the medians and new / old.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time

import numpy as np


def load(name, root):
    """``root``'s ``refdlrt.ops.conv``, its package imported as ``name``."""
    init = os.path.join(os.path.abspath(root), "refdlrt", "__init__.py")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return importlib.import_module(f"{name}.ops.conv")


def median_ms(f, repeats=5):
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


SHAPES = [(128, 64, 64, 32, 3, 1), (64, 32, 32, 28, 3, 1), (64, 32, 64, 14, 3, 1), (64, 64, 64, 14, 3, 1),
          (64, 6, 16, 14, 5, 0), (64, 16, 16, 28, 3, 1), (64, 64, 32, 14, 3, 1)]  # N, C_in, C_out, H, k, pad


def main() -> int:
    roots = sys.argv[1:3] if len(sys.argv) >= 3 else ["/tmp/old", "."]
    old, new = load("refdlrt_old", roots[0]), load("refdlrt_new", roots[1])
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        for (N, ci, co, H, k, p) in SHAPES:
            x = rng.standard_normal((N, ci, H, H)).astype(dt)
            Ho = H + 2 * p - k + 1
            dy = rng.standard_normal((N, co, Ho, Ho)).astype(dt)
            res = {"old": [], "new": []}
            for r in range(3):
                order = (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
                for name, m in order:
                    res[name].append(median_ms(lambda: m.conv2d_weight_grad(x, dy, k, padding=p)))
            a, b = np.median(res["old"]), np.median(res["new"])
            print(f"{np.dtype(dt).name} N={N} {ci}->{co} {H}x{H} k={k} pad={p}: "
                  f"old {a:.1f} ms, new {b:.1f} ms, new/old {b / a:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
