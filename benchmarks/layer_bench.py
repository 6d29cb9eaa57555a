"""The one-layer measurement of run.py's ``layer`` section (issue 14's 64 -> 64 layer): its FLOP
model and its timing, shared with ab_steps.py's ``--model layer``."""

from __future__ import annotations

import time

import numpy as np

from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.nn.lowrank_layers import TuckerConv2d
from refdlrt.ops.conv import conv2d_backward, conv2d_forward


def layer_flops(P: int, n: int, k2: int, r: int) -> tuple:
    """(dense f+b, Tucker f+b + projections) FLOPs, see the module docstring."""
    rh = min(2 * r, n)
    fwd, bwd = 2 * P * (n * r + k2 * r * r + r * n), 2 * P * (r * n + 2 * k2 * r * r + r * n)
    proj = 2 * P * (k2 * r * n + k2 * n * r + k2 * rh * rh + 2 * n * rh)
    return 3 * 2 * P * k2 * n * n, fwd + bwd + proj


def layer_data(N=128, H=32, n=64, k=3):
    """run.py's layer data (seed 0, float32): x and dy (N, n, H, H), a k x k kernel w (n, n, k, k)
    scaled by 1 / sqrt(n k k). Shared with ab_steps.py and ab_k_form.py."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, n, H, H), dtype=np.float32)
    dy = rng.standard_normal((N, n, H, H), dtype=np.float32)
    w = (rng.standard_normal((n, n, k, k)) / np.sqrt(n * k * k)).astype(np.float32)
    return x, dy, w


def time_layer(x, w, dy, r, repeats):
    """Median seconds (dense f+b, Tucker f+b, Tucker f+b+projections+step), interleaved."""
    k = w.shape[2]
    layer, ranks = TuckerConv2d.from_dense(w, None, ranks=(r, r, k, k), padding=1), (r, r, k, k)

    def dense():
        t0 = time.perf_counter()
        _, cache = conv2d_forward(x, w, None, padding=1)
        conv2d_backward(dy, cache)
        return time.perf_counter() - t0

    def tucker():
        t0 = time.perf_counter()
        layer.forward(x)
        layer.backward(dy)
        t1 = time.perf_counter()
        Y, _ = tdlrt_step(layer.weight, layer.projector(), 0.01, 0.0, r_min=r, r_max=ranks,
                          diagnostics=False)
        t2 = time.perf_counter()
        if tuple(Y.ranks) != ranks:
            raise RuntimeError(f"layer: ranks changed to {Y.ranks}, expected {ranks}")
        return t1 - t0, t2 - t0

    for _ in range(2):  # warm-up
        dense(), tucker()
    s = np.array([(dense(), *tucker()) for _ in range(repeats)])
    return np.median(s, axis=0)
