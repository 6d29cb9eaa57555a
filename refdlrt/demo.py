"""``refdlrt demo``: a conv forward/backward on embedded MNIST images, with its checks printed."""

from __future__ import annotations

import numpy as np

from .gradcheck import adjoint_test
from .ops.conv import conv2d_backward, conv2d_forward
from .ops.conv_naive import conv2d_naive
from .tolerances import tolerance
from .training.datasets import load_embedded_mnist


def run_demo(seed: int = 0, batch: int = 4) -> int:
    """Run the checks; return 0 if all pass, 1 otherwise."""
    if batch < 1:
        raise ValueError(f"batch: expected at least 1 image, got {batch}")
    rng = np.random.default_rng(seed)
    ds = load_embedded_mnist(seed=seed)
    x = ds.x_train[:batch].astype(np.float64)  # N, 1, 28, 28
    w = rng.standard_normal((6, 1, 5, 5)) / 5.0  # LeNet5's first conv: 6 channels, 5x5
    b = rng.standard_normal(6)
    geom = dict(stride=1, padding=2, dilation=1)
    y, cache = conv2d_forward(x, w, b, **geom)  # N, 6, 28, 28
    tol = tolerance(np.float64)
    checks = []
    err = float(np.abs(y - conv2d_naive(x, w, b, **geom)).max())
    checks.append(("forward == loop spec (max abs diff)", err, tol.atol * 10, err <= tol.atol * 10))
    res = adjoint_test(
        lambda x_, w_, b_: conv2d_forward(x_, w_, b_, **geom)[0],
        lambda c: conv2d_backward(c, cache),
        (x, w, b),
        rng,
    )
    for r in res:
        checks.append((f"adjoint test, d/d{'xwb'[r.wrt]} (rel. error)", r.rel_error, r.rtol, r.ok))
    print(f"refdlrt demo: conv2d on {batch} embedded MNIST images {x.shape} -> {y.shape}, "
          f"kernel {w.shape}, padding 2")
    width = max(len(c[0]) for c in checks)
    for name, val, bound, ok in checks:
        print(f"  {name:<{width}}  {val:.2e}  (<= {bound:.0e})  {'OK' if ok else 'NOT OK'}")
    ok = all(c[3] for c in checks)
    print("all checks OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1
