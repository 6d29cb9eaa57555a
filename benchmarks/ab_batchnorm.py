"""Batch norm's forward and backward of two checkouts, alternated in one process, and PyTorch's.

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_batchnorm.py /tmp/old . [--rounds 4]

At vgg_small's batch-norm shapes (N = 64: 32 channels at 28 x 28, 64 at 14 x 14; float32, 2
threads, training mode with running statistics), each checkout's ``refdlrt.ops.batchnorm`` is
imported under a package name of its own (``checkouts.import_checkout``), so both see the same
phase of the machine. Each round times each checkout's forward and backward (median of 15 calls,
the order alternating between rounds); prints per shape the medians over the rounds and
PyTorch's forward and forward + backward (``F.batch_norm``, autograd) in the same process.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from checkouts import import_checkout, median_ms  # benchmarks/: this script's folder

SHAPES = ((64, 32, 28, 28), (64, 64, 14, 14))  # vgg_small's bn1/bn2 and bn3/bn4 inputs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs=2, help="the two checkouts to compare")
    p.add_argument("--rounds", type=int, default=4)
    a = p.parse_args()
    mods = [import_checkout(f"refdlrt_ab{i}", root, "ops.batchnorm") for i, root in enumerate(a.roots)]
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        C = shape[1]
        x, dy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
        gamma, beta = (rng.standard_normal(C).astype(np.float32) for _ in range(2))
        stats = (np.zeros(C, np.float32), np.ones(C, np.float32))
        times = [([], []) for _ in mods]  # per checkout: forward, backward ms per round
        for r in range(a.rounds):
            for i in (range(len(mods)) if r % 2 == 0 else reversed(range(len(mods)))):
                bn = mods[i]
                cache = bn.batchnorm2d_forward(x, gamma, beta, *stats)[1]
                times[i][0].append(median_ms(lambda: bn.batchnorm2d_forward(x, gamma, beta, *stats), 15))
                times[i][1].append(median_ms(lambda: bn.batchnorm2d_backward(dy, cache), 15))
        line = "  ".join(f"{root}: fwd {np.median(f):.2f} bwd {np.median(b):.2f}"
                         for root, (f, b) in zip(a.roots, times))
        print(f"{shape}  {line}  | {torch_times(x, dy, gamma, beta, stats)}", flush=True)
    return 0


def torch_times(x, dy, gamma, beta, stats) -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    torch.set_num_threads(2)
    tx, tg, tb = (torch.from_numpy(v).requires_grad_() for v in (x, gamma, beta))
    rm, rv = (torch.from_numpy(s.copy()) for s in stats)
    tdy = torch.from_numpy(dy)

    def forward():
        return torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True)

    fwd = median_ms(lambda: forward().detach(), 15)
    both = median_ms(lambda: torch.autograd.grad(forward(), (tx, tg, tb), tdy), 15)
    return f"torch fwd {fwd:.2f}, fwd+bwd {both:.2f} ms"


if __name__ == "__main__":
    sys.exit(main())
