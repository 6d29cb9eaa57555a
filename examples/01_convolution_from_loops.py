"""01 - The convolution: from the loop specification to the fast path (ALGORITHM.md §3).

A conv layer computes, for every output pixel (oh, ow) and kernel tap (i, j),
    y[:, :, oh, ow] += xpad[:, :, s*oh + d*i, s*ow + d*j] @ w[:, :, i, j].T      (NCHW, OIHW)
`refdlrt.conv2d_naive` is exactly these four loops: slow, but readable, hence the spec.
`refdlrt.conv2d_forward` computes the same numbers as one matrix product (im2col), and
`refdlrt.conv2d_backward` returns (dx, dw, db). This script runs both on a few embedded MNIST
images through three conv layers in a row (padding; stride; dilation), and checks
  1. forward and backward agree with the loop spec (and its loop backward) to rounding;
  2. the adjoint test: <J t, c> == <t, J^T c>, J t by central differences (refdlrt.adjoint_test).
`--plant-bug` flips the kernel in the fast path (convolution instead of cross-correlation, a
classic bug): the spec checks say NOT OK and the script exits 1 (tests/test_examples.py checks
that). The adjoint tests still pass then, since the flipped forward and its backward are a
consistent pair: the adjoint test checks the backward, only the spec checks the forward.
"""

import argparse
import sys
import time

import numpy as np

import refdlrt
from refdlrt.ops.conv_naive import conv2d_naive_backward

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--images", type=int, default=4, help="number of MNIST images")
parser.add_argument("--plant-bug", action="store_true", help="flip the kernel in the fast path")
args = parser.parse_args()

rng = np.random.default_rng(args.seed)
data = refdlrt.load_embedded_mnist(n_train=args.images, n_test=1, seed=args.seed)
x = data.x_train.astype(np.float64)  # N, 1, 28, 28 (float64: the adjoint test needs it)
tol = refdlrt.tolerance(np.float64)
failed = 0


def check(name, value, bound):
    global failed
    ok = bool(value <= bound)
    failed += not ok
    print(f"    {name:<34} {value:9.2e} <= {bound:.0e}  {'OK' if ok else 'NOT OK'}")


def rel(a, b):  # max difference relative to the size of the values
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


print(f"input: {x.shape[0]} embedded MNIST images, x {x.shape}")
for c_out, k, geom in [(6, 5, dict(padding=2)), (4, 3, dict(stride=2, padding=1)),
                       (3, 3, dict(dilation=2))]:
    c_in = x.shape[1]
    w = rng.standard_normal((c_out, c_in, k, k)) / (k * np.sqrt(c_in))  # C_out, C_in, kh, kw
    b = rng.standard_normal(c_out)
    w_fast = w[:, :, ::-1, ::-1].copy() if args.plant_bug else w
    t0 = time.perf_counter()
    y_spec = refdlrt.conv2d_naive(x, w, b, **geom)
    t1 = time.perf_counter()
    y, cache = refdlrt.conv2d_forward(x, w_fast, b, **geom)
    t2 = time.perf_counter()
    print(f"  x {x.shape} * w {w.shape}, {geom} -> y {y.shape}  (loops {1e3 * (t1 - t0):.1f} ms, "
          f"fast path {1e3 * (t2 - t1):.1f} ms)")
    check("forward == loop spec", rel(y, y_spec), tol.rtol)
    dy = rng.standard_normal(y.shape)
    for name, g, g_spec in zip(("dx", "dw", "db"), refdlrt.conv2d_backward(dy, cache),
                               conv2d_naive_backward(dy, x, w, b, **geom)):
        check(f"backward {name} == loop spec", rel(g, g_spec), tol.rtol)
    results = refdlrt.adjoint_test(lambda x_, w_, b_: refdlrt.conv2d_forward(x_, w_, b_, **geom)[0],
                                   lambda c: refdlrt.conv2d_backward(c, cache), (x, w_fast, b), rng)
    for r in results:
        check(f"adjoint test d/d{'xwb'[r.wrt]} (rel. error)", r.rel_error, r.rtol)
    x = y_spec  # the next layer's input, as in a network

print("all checks OK" if not failed else f"{failed} check(s) NOT OK")
sys.exit(1 if failed else 0)
