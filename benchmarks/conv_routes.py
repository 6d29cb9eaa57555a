"""The forward and dx of a stride-1 convolution by im2col + one GEMM and by shifted GEMMs
(refdlrt.ops.conv_shifted), interleaved on the same data: where does each route pay?

Usage:  python benchmarks/conv_routes.py [--repeats 12] [--wide] [--backend numpy|cupy]

Shapes: the Tucker cores of vgg_small at its settled ranks (15-17 channels, 28 x 28 and 14 x 14),
the run.py layer's core (16 channels, 32 x 32), small cores (4, 8 channels), dense layers
(32, 64 channels) and LeNet5's unpadded 5 x 5 layers; batch 128 (64 for LeNet5), float32.
Prints ms (medians after 2 warm-up rounds) and shifted / im2col, with the route the rule
(``shifted_route_pays``) takes. dx is the route ``_select_dx_route`` picks; the shifted GEMMs
only change the transposed-convolution dx. With ``--backend cupy`` (benchmarks/gpu_check.sh) the
same on the GPU, each call followed by a device synchronisation: the rule was measured on a CPU
and is applied unchanged there until this says otherwise.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import numpy as np

from refdlrt.backend import namespace
from refdlrt.ops import conv

SHAPES = [  # N, C_in, C_out, H (= W), k, padding
    (128, 15, 15, 28, 3, 1), (128, 17, 15, 14, 3, 1), (128, 15, 17, 14, 3, 1),
    (128, 16, 16, 32, 3, 1), (128, 8, 8, 32, 3, 1), (128, 4, 4, 32, 3, 1),
    (128, 32, 32, 28, 3, 1), (128, 64, 64, 14, 3, 1), (128, 16, 64, 32, 3, 1),
    (64, 6, 12, 14, 5, 0), (128, 1, 32, 28, 3, 1),
]
WIDE = [(128, 64, 64, 32, 3, 1), (128, 32, 48, 28, 3, 1), (128, 64, 32, 14, 3, 1),
        (128, 128, 128, 14, 3, 1), (32, 256, 256, 14, 3, 1), (128, 24, 24, 28, 3, 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--wide", action="store_true", help="only wider layers (24-256 channels)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    args = p.parse_args()
    xp, rng = namespace(args.backend), np.random.default_rng(0)
    sync = (lambda: xp.cuda.Device().synchronize()) if args.backend == "cupy" else (lambda: None)
    print(f"backend {args.backend}")
    print(f"{'shape':>26} {'fwd im2col':>10} {'shifted':>8} {'ratio':>6} {'dx im2col':>10} "
          f"{'shifted':>8} {'ratio':>6}  rule: fwd / dx")
    for N, C, O, H, k, p_ in (WIDE if args.wide else SHAPES):
        x = xp.asarray(rng.standard_normal((N, C, H, H), dtype=np.float32))
        w = xp.asarray(rng.standard_normal((O, C, k, k), dtype=np.float32))
        T: dict = {}
        for it in range(args.repeats + 2):
            for force in (False, True):
                with mock.patch.object(conv, "shifted_route_pays", lambda *a, f=force: f):
                    sync()
                    t0 = time.perf_counter()
                    y, cache = conv.conv2d_forward(x, w, None, padding=p_)
                    sync()
                    t1 = time.perf_counter()
                    conv.conv2d_backward(y, cache, need_dw=False)
                    sync()
                    t2 = time.perf_counter()
                if it >= 2:
                    T.setdefault(("f", force), []).append(t1 - t0)
                    T.setdefault(("dx", force), []).append(t2 - t1)
        m = {key: 1e3 * float(np.median(v)) for key, v in T.items()}
        g = cache[3]
        fwd_rule = conv._select_forward_route(g, xp) is conv._forward_by_shifts
        Lh, Lw = H + k - 1, H + k - 1
        dx_rule = (conv._select_dx_route(g) is conv._dx_by_transposed_conv
                   and conv.shifted_route_pays(O, C, (Lh, Lw), (H, H), (1, 1), xp))
        name = f"{C}->{O} {H}x{H} k{k} p{p_} N{N}"
        print(f"{name:>26} {m['f', False]:10.1f} {m['f', True]:8.1f} {m['f', True] / m['f', False]:6.2f} "
              f"{m['dx', False]:10.1f} {m['dx', True]:8.1f} {m['dx', True] / m['dx', False]:6.2f}  "
              f"{'shifted' if fwd_rule else 'im2col'} / {'shifted' if dx_rule else 'im2col'}", flush=True)


if __name__ == "__main__":
    main()
