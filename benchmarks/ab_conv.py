"""Conv f+b of two checkouts against PyTorch, alternated in fresh processes (a drift of the
machine hits both alike): is a change a regression, or is the machine in a slow phase?

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_conv.py /tmp/old . [--rounds 3]

Each round runs ``--child`` once per checkout, in that order; each child imports refdlrt from
its checkout and prints ``bench_conv.time_case``'s medians of 7 interleaved (ours, torch) pairs
on the conv benchmark's shape (N = 128, 64 -> 64, 32x32, 3x3, pad 1, float32, f+b).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def child(root: str) -> None:
    sys.path.insert(0, os.path.abspath(root))  # before bench_conv imports refdlrt
    sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
    sys.argv = ["bench_conv.py"]  # bench_conv parses its command line at import
    import bench_conv
    import numpy as np

    import refdlrt

    _, (ours, theirs) = bench_conv.time_case(128, 64, 64, 32, 3, 1, np.float32, 7,
                                             np.random.default_rng(0))
    print(f"{os.path.dirname(refdlrt.__file__)}: ours {1e3 * ours:.0f} ms, torch {1e3 * theirs:.0f} ms, "
          f"ratio {ours / theirs:.2f}", flush=True)


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
