"""GPU benchmark: refdlrt's conv2d and Tucker layer on CuPy against PyTorch/cuDNN, float32.

    python benchmarks/bench_gpu.py [--repeats R] [--json PATH]

Needs CuPy and a GPU; PyTorch with CUDA is optional (its columns are left empty without it).
Prints one table; target: conv forward + backward <= 2x cuDNN in float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _sync():
    import cupy

    cupy.cuda.Device().synchronize()


def _time(fn, repeats, sync):
    for _ in range(2):  # warm-up (kernel compilation, cuDNN autotune, memory pool)
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    import cupy

    from refdlrt.dlrt.problems import random_tucker
    from refdlrt.nn.lowrank_layers import tucker_conv2d_backward, tucker_conv2d_forward
    from refdlrt.ops.conv import conv2d_backward, conv2d_forward
    from refdlrt.tensor.tucker import Tucker

    try:
        import torch

        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    rng = np.random.default_rng(0)
    N, C, H, k = 128, 64, 32, 3
    x = cupy.asarray(rng.standard_normal((N, C, H, H)), dtype=cupy.float32)
    w = cupy.asarray(rng.standard_normal((C, C, k, k)) / 24, dtype=cupy.float32)
    b = cupy.zeros(C, dtype=cupy.float32)
    dy = cupy.asarray(rng.standard_normal((N, C, H, H)), dtype=cupy.float32)

    def ours_conv():
        y, c = conv2d_forward(x, w, b, padding=1)
        conv2d_backward(dy, c)

    rows = []
    t_ours = _time(ours_conv, args.repeats, _sync)
    t_torch = None
    if has_torch:
        tx = torch.as_tensor(cupy.asnumpy(x), device="cuda").requires_grad_()
        tw = torch.as_tensor(cupy.asnumpy(w), device="cuda").requires_grad_()
        tb = torch.zeros(C, device="cuda", requires_grad=True)
        tdy = torch.as_tensor(cupy.asnumpy(dy), device="cuda")

        def torch_conv():
            y = torch.nn.functional.conv2d(tx, tw, tb, padding=1)
            torch.autograd.grad(y, (tx, tw, tb), tdy)

        t_torch = _time(torch_conv, args.repeats, torch.cuda.synchronize)
    rows.append(dict(case="conv2d f+b, N=128 64->64 32x32 3x3", ours_ms=1e3 * t_ours,
                     torch_ms=None if t_torch is None else 1e3 * t_torch,
                     ratio=None if t_torch is None else t_ours / t_torch, target="<= 2"))
    for r in (4, 8, 16, 32):
        Y = random_tucker((C, C, k, k), (r, r, 3, 3), rng)
        Yc = Tucker(cupy.asarray(Y.core, dtype=cupy.float32),
                    tuple(cupy.asarray(U, dtype=cupy.float32) for U in Y.factors))

        def tucker():
            y, c = tucker_conv2d_forward(x, Yc, b, padding=1)
            _, _, proj = tucker_conv2d_backward(dy, c)
            proj.project([None, *Yc.factors[1:]])
            proj.project([Yc.factors[0], None, *Yc.factors[2:]])

        t = _time(tucker, args.repeats, _sync)
        rows.append(dict(case=f"Tucker layer f+b+2 projections, ranks ({r},{r},3,3)",
                         ours_ms=1e3 * t, torch_ms=None, ratio=t / t_ours,
                         target="vs our dense conv f+b"))
    print(f"GPU: {cupy.cuda.runtime.getDeviceProperties(0)['name'].decode()}, CuPy {cupy.__version__}, "
          f"torch CUDA: {'yes' if has_torch else 'no'}")
    print(f"{'case':<52} {'ours ms':>9} {'torch ms':>9} {'ratio':>7}  target")
    for row in rows:
        tm = "" if row["torch_ms"] is None else f"{row['torch_ms']:.2f}"
        ra = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"{row['case']:<52} {row['ours_ms']:>9.2f} {tm:>9} {ra:>7}  {row['target']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
