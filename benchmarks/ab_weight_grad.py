"""The kernel gradient alone (conv2d_weight_grad) of two checkouts, alternated in one process.

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_weight_grad.py [/tmp/old .]

Each checkout's refdlrt is imported under a package name of its own; per shape (vgg_small's,
LeNet5's second convolution's, run.py's layer's, in float32 and float64), three rounds of the
two in alternating order, each the median of 5 calls; prints the medians and new / old.
"""

from __future__ import annotations

import sys

import numpy as np
from checkouts import import_checkout, median_ms  # benchmarks/: this script's folder

SHAPES = [(128, 64, 64, 32, 3, 1), (64, 32, 32, 28, 3, 1), (64, 32, 64, 14, 3, 1), (64, 64, 64, 14, 3, 1),
          (64, 6, 16, 14, 5, 0), (64, 16, 16, 28, 3, 1), (64, 64, 32, 14, 3, 1)]  # N, C_in, C_out, H, k, pad


def main() -> int:
    roots = sys.argv[1:3] if len(sys.argv) >= 3 else ["/tmp/old", "."]
    old, new = (import_checkout(f"refdlrt_{k}", root, "ops.conv") for k, root in zip(("old", "new"), roots))
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
                    res[name].append(median_ms(lambda: m.conv2d_weight_grad(x, dy, k, padding=p), 5))
            a, b = np.median(res["old"]), np.median(res["new"])
            print(f"{np.dtype(dt).name} N={N} {ci}->{co} {H}x{H} k={k} pad={p}: "
                  f"old {a:.1f} ms, new {b:.1f} ms, new/old {b / a:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
