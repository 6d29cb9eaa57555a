"""CuPy agrees with NumPy: every kernel, the TDLRT step and one training step, on the same
inputs (run where a GPU is present, skipped otherwise; the comparison itself is tested on CPU)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from refdlrt.backend import gpu_available, to_numpy
from refdlrt.tolerances import tolerance

GPU = pytest.mark.skipif(not gpu_available(), reason="no usable GPU (CuPy)")


def _to(xp, obj):
    if isinstance(obj, np.ndarray):
        return xp.asarray(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(xp, o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(xp, v) for k, v in obj.items()}
    if hasattr(obj, "core") and hasattr(obj, "factors"):  # Tucker
        from refdlrt.tensor.tucker import Tucker

        return Tucker(xp.asarray(obj.core), tuple(xp.asarray(U) for U in obj.factors))
    return obj


def _flat(out):
    if hasattr(out, "core") and hasattr(out, "factors"):
        return [to_numpy(out.to_tensor())]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    if hasattr(out, "shape") and getattr(out, "dtype", None) is not None:
        return [to_numpy(out)]
    return []  # caches, infos


def agree(fn, args, xp2, dtype=np.float64, scale=10.0):
    """Run ``fn`` on NumPy and on ``xp2`` with the same inputs; every array output agrees to
    ``scale`` x the dtype's rtol relative to its norm. Returns the largest relative difference."""
    ref = _flat(fn(*args))
    new = _flat(fn(*_to(xp2, args)))
    assert len(ref) == len(new) and ref, "outputs differ in number"
    worst = 0.0
    for a, b in zip(ref, new):
        assert a.shape == b.shape
        err = float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(a.ravel()), 1e-300))
        worst = max(worst, err)
    assert worst <= scale * tolerance(dtype).rtol, worst
    return worst


def _cases():
    from refdlrt.dlrt.integrator import tdlrt_step
    from refdlrt.dlrt.problems import random_quadratic, random_tucker
    from refdlrt.ops.activation import relu_backward, relu_forward
    from refdlrt.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
    from refdlrt.ops.conv import conv2d_backward, conv2d_forward
    from refdlrt.ops.linear import linear_backward, linear_forward
    from refdlrt.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
    from refdlrt.ops.pooling import maxpool2d_backward, maxpool2d_forward
    from refdlrt.tensor.hosvd import hosvd

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 9, 8))
    w = rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    dy = rng.standard_normal((4, 5, 5, 8))

    def conv(x, w, b, dy):
        y, c = conv2d_forward(x, w, b, stride=(2, 1), padding=1, dilation=1)
        return (y, *conv2d_backward(dy, c))

    def pool(x):
        y, c = maxpool2d_forward(x, 2)
        return y, maxpool2d_backward(y * 0.5 + 1.0, c)

    def bn(x, g, be):
        y, c = batchnorm2d_forward(x, g, be, None, None, training=True)[:2]
        return (y, *batchnorm2d_backward(y, c))

    def lin(x, w, b):
        y, c = linear_forward(x, w, b)
        return (y, *linear_backward(y, c))

    def relu(x):
        y, c = relu_forward(x)
        return y, relu_backward(y + 1.0, c)

    def loss(z, t):
        l, c = softmax_cross_entropy(z, t)
        return l, softmax_cross_entropy_backward(c)

    Y = random_tucker((6, 5, 4), (3, 3, 2), rng)
    G = random_quadratic(Y.shape, rng).gradient(Y.to_tensor())
    return {
        "conv2d": (conv, (x, w, b, dy)),
        "maxpool2d": (pool, (x,)),
        "batchnorm2d": (bn, (x, rng.standard_normal(3), rng.standard_normal(3))),
        "linear": (lin, (rng.standard_normal((7, 6)), rng.standard_normal((4, 6)), rng.standard_normal(4))),
        "relu": (relu, (x,)),
        "softmax_cross_entropy": (loss, (rng.standard_normal((6, 10)), rng.integers(0, 10, 6))),
        "hosvd": (lambda T: hosvd(T, tau=0.1)[0], (rng.standard_normal((6, 5, 4)),)),
        "tdlrt_step": (lambda Y, G: tdlrt_step(Y, G, 0.3, 0.1)[0], (Y, G)),
    }


@GPU
@pytest.mark.gpu
@pytest.mark.parametrize("name", list(_cases()))
def test_cupy_agrees_with_numpy(name):
    import cupy

    fn, args = _cases()[name]
    agree(fn, args, cupy)


@GPU
@pytest.mark.gpu
def test_one_training_step_on_cupy_agrees_with_numpy():
    from refdlrt.training.datasets import load_embedded_mnist
    from refdlrt.training.trainer import TrainConfig, Trainer

    ds = load_embedded_mnist(n_train=64, n_test=16, seed=0)
    losses, weights = [], []
    for backend in ("numpy", "cupy"):
        tr = Trainer(TrainConfig(method="tdlrt", epochs=1, batch_size=64, dtype="float64",
                                 backend=backend), ds)
        xb = tr.xp.asarray(tr.data.x_train[:64], dtype=np.float64)
        losses.append(tr.train_step(xb, tr.xp.asarray(tr.data.y_train[:64]), 0.1)[0])
        weights.append([to_numpy(ly.weight.to_tensor()) for ly in tr.layers if hasattr(ly, "weight")])
    assert losses[1] == pytest.approx(losses[0], rel=tolerance(np.float64).rtol)
    for a, b in zip(*weights):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-8 * np.abs(a).max())  # rank choices equal


@GPU
@pytest.mark.gpu
def test_small_svds_run_on_the_host_and_come_back_as_cupy():
    """The SVD of a CuPy matrix of at most _HOST_SVD_MAX entries is the host's LAPACK's (the
    same numbers as NumPy's, bit for bit, returned as CuPy arrays); a larger one, and every QR
    and eigh, cuSOLVER's."""
    import cupy

    from refdlrt.tensor import linalg

    rng = np.random.default_rng(3)
    A = rng.standard_normal((64, 32))
    with linalg.one_blas_thread(np):  # as svd_thin: the same LAPACK call
        ref = np.linalg.svd(A, full_matrices=False)
    out = linalg.svd_thin(cupy.asarray(A))
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert isinstance(o, cupy.ndarray)
        np.testing.assert_array_equal(o.get(), r)
    big = rng.standard_normal((300, 256))
    assert big.size > linalg._HOST_SVD_MAX
    with mock.patch.object(np.linalg, "svd", side_effect=AssertionError("took the host route")), \
            mock.patch.object(np.linalg, "qr", side_effect=AssertionError("QR on the host")), \
            mock.patch.object(np.linalg, "eigh", side_effect=AssertionError("eigh on the host")):
        s = linalg.svd_thin(cupy.asarray(big))[1]
        linalg.qr_signfixed(cupy.asarray(A))
        linalg._descending_eigh(cupy.asarray(A.T @ A))
    assert isinstance(s, cupy.ndarray)
    np.testing.assert_allclose(s.get(), np.linalg.svd(big, compute_uv=False), rtol=1e-10)  # σ₁/σ_n ~ 30: well conditioned


class _Perturbed:
    """A "second backend" that is NumPy with a relative error of 1e-6 on every float input but
    matrices (which keeps Tucker factors orthonormal, so the step accepts them): the comparison
    must fail (test the tester, runs on the CPU)."""

    def __getattr__(self, name):
        return getattr(np, name)

    def asarray(self, a):
        a = np.asarray(a)
        return a * (1 + 1e-6) if a.dtype.kind == "f" and a.ndim != 2 else a


@pytest.mark.parametrize("name", ["conv2d", "tdlrt_step", "linear"])
def test_the_agreement_check_sees_a_wrong_backend(name):
    fn, args = _cases()[name]
    agree(fn, args, np)  # NumPy against itself: agrees
    with pytest.raises(AssertionError):
        agree(fn, args, _Perturbed())


def test_gpu_check_fits_in_five_minutes():
    """benchmarks/gpu_check.sh (issue 14: "runs, in under 5 minutes") gives each step a time limit,
    the machine probe included; the limits add to at most 300 s, and every script a step runs is
    in the checkout."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = (root / "benchmarks" / "gpu_check.sh").read_text(encoding="utf-8")
    steps = re.findall(r"^timeout (\d+) \S+ (\S+)", script, flags=re.MULTILINE)
    assert len(steps) == 7, steps  # probe, tests, validate, benchmark, its A/B, routes, profile
    assert sum(int(limit) for limit, _ in steps) <= 300
    for _, target in steps:
        if target.endswith(".py"):
            assert (root / target).is_file(), target
