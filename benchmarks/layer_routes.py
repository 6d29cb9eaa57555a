"""The run.py layer (64 -> 64 channels, 3x3, pad 1, N = 128, float32) under four settings of
this checkout, interleaved in one process: the conv routes (im2col only, as before the shifted
GEMMs, or by the rule) x the Tucker projector's route ("dense": form G; "plain": the K-steps by
contraction, the S-step by a reduced kernel gradient).

Usage:  python benchmarks/layer_routes.py R [H]      (rank r of modes 0, 1; image size, default 32)

Prints, per setting, medians of 10 rounds (after 2 warm-up rounds) of the dense f+b, the Tucker
f+b, the projections + ``tdlrt_step``, and the paired ratio (median over rounds of
(Tucker f+b + projections + step) / dense f+b of the same round).
"""

from __future__ import annotations

import sys
import time
from unittest import mock

import numpy as np

from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.nn.lowrank_layers import TuckerConv2d
from refdlrt.ops import conv
from refdlrt.ops.conv import conv2d_backward, conv2d_forward

SETTINGS = {"im2col, dense": (False, "dense"), "shifted, dense": (True, "dense"),
            "im2col, plain": (False, "plain"), "shifted, plain": (True, "plain")}


def main() -> None:
    r = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    N, H, n, k = 128, int(sys.argv[2]) if len(sys.argv) > 2 else 32, 64, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, n, H, H), dtype=np.float32)
    dy = rng.standard_normal((N, n, H, H), dtype=np.float32)
    w = (rng.standard_normal((n, n, k, k)) / np.sqrt(n * k * k)).astype(np.float32)
    rule, layers, T = conv.shifted_route_pays, {}, {}
    for name, (_, route) in SETTINGS.items():
        layers[name] = TuckerConv2d.from_dense(w, None, ranks=(r, r, k, k), padding=1)
        layers[name].projection_route = route
    for it in range(12):
        for name, (shifted, _) in SETTINGS.items():
            with mock.patch.object(conv, "shifted_route_pays", rule if shifted else (lambda *a: False)):
                t0 = time.perf_counter()
                _, cache = conv2d_forward(x, w, None, padding=1)
                conv2d_backward(dy, cache)
                t1 = time.perf_counter()
                layer = layers[name]
                layer.forward(x)
                layer.backward(dy)
                t2 = time.perf_counter()
                tdlrt_step(layer.weight, layer.projector(), 0.01, 0.0, r_min=r, r_max=(r, r, k, k),
                           diagnostics=False)
                t3 = time.perf_counter()
            if it >= 2:
                for key, v in (("dense", t1 - t0), ("fb", t2 - t1), ("ps", t3 - t2),
                               ("ratio", (t3 - t1) / (t1 - t0))):
                    T.setdefault((name, key), []).append(v)
    print(f"layer {n} -> {n}, {H}x{H}, N={N}, ranks ({r}, {r}, {k}, {k}) (ms, medians of 10)")
    for name in SETTINGS:
        d, fb, ps = (1e3 * float(np.median(T[name, key])) for key in ("dense", "fb", "ps"))
        print(f"  {name:15s} dense f+b {d:6.1f}  tucker f+b {fb:6.1f}  proj+step {ps:6.1f}  "
              f"paired ratio {float(np.median(T[name, 'ratio'])):.3f}", flush=True)


if __name__ == "__main__":
    main()
