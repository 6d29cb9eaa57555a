"""Tests of batchnorm2d_forward/backward in training and eval mode.

Oracles: a per-channel loop spec of the batch statistics, normalisation and running
update; the adjoint test in float64; PyTorch CPU (F.batch_norm, float64 autograd,
including its in-place running statistics update); float32 vs float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ForeignArray
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test
from refdlrt.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from refdlrt.tolerances import assert_close


@st.composite
def bn_cases(draw):
    """(shape, training, momentum, eps, seed); training needs N H W >= 2 values per channel
    (3 here, so that the batch variance is not tiny by chance)."""
    training = draw(st.booleans())
    shape = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
    )
    if training and shape[0] * shape[2] * shape[3] < 3:
        shape = (3, *shape[1:])
    momentum = draw(st.sampled_from([0.1, 0.5, 1.0]))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return shape, training, momentum, eps, draw(st.integers(0, 2**32 - 1))


def bn_data(case, dtype=np.float64):
    """x with per-channel offsets and scales, gamma, beta, running stats (var > 0), dy."""
    shape, _, _, _, seed = case
    C = shape[1]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, C, 1, 1)) + rng.normal(
        0, 2, (1, C, 1, 1)
    )
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2, C)
    dy = rng.standard_normal(shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, running_mean, running_var, dy))


def kwargs_of(case):
    return {"training": case[1], "momentum": case[2], "eps": case[3]}


def bn_spec(x, gamma, beta, running_mean, running_var, training, momentum, eps):
    """Per channel, by explicit loops: batch (or running) stats, y, and the running update."""
    N, C, H, W = x.shape
    y = np.zeros(x.shape)
    new_mean, new_var = running_mean.copy(), running_var.copy()
    for c in range(C):
        vals = [x[n, c, h, w] for n in range(N) for h in range(H) for w in range(W)]
        m = len(vals)
        if training:
            mu = math.fsum(vals) / m
            ss = math.fsum((v - mu) ** 2 for v in vals)
            var = ss / m
            new_mean[c] = (1 - momentum) * running_mean[c] + momentum * mu
            new_var[c] = (1 - momentum) * running_var[c] + momentum * ss / (m - 1)
        else:
            mu, var = running_mean[c], running_var[c]
        for n in range(N):
            for h in range(H):
                for w in range(W):
                    y[n, c, h, w] = gamma[c] * (x[n, c, h, w] - mu) / math.sqrt(var + eps) + beta[c]
    return y, new_mean, new_var


@given(case=bn_cases())
def test_batchnorm_forward_matches_loop_spec(xp, case):
    x, gamma, beta, rm, rv, _ = bn_data(case)
    y, _, new_mean, new_var = batchnorm2d_forward(
        *(xp.asarray(a) for a in (x, gamma, beta, rm, rv)), **kwargs_of(case)
    )
    y_spec, mean_spec, var_spec = bn_spec(x, gamma, beta, rm, rv, **kwargs_of(case))
    assert_close(y, y_spec, np.float64, scale=float(np.abs(y_spec).max()))
    assert_close(new_mean, mean_spec, np.float64)
    assert_close(new_var, var_spec, np.float64)


@given(case=bn_cases())
def test_batchnorm_backward_passes_adjoint_test(xp, case):
    x, gamma, beta, rm, rv, _ = (xp.asarray(a) for a in bn_data(case))
    kw = kwargs_of(case)
    _, cache, _, _ = batchnorm2d_forward(x, gamma, beta, rm, rv, **kw)
    results = adjoint_test(
        lambda x, gamma, beta: batchnorm2d_forward(x, gamma, beta, rm, rv, **kw)[0],
        lambda c: batchnorm2d_backward(c, cache),
        [x, gamma, beta],
        np.random.default_rng(case[-1] + 1),
    )
    assert len(results) == 3
    assert all(r.ok for r in results), results


@pytest.mark.torch
@given(case=bn_cases())
def test_batchnorm_matches_torch(xp, torch, case):
    x, gamma, beta, rm, rv, dy = bn_data(case)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)  # updated in place by torch in training
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, weight=gt, bias=bt, **kwargs_of(case))
    yt.backward(torch.tensor(dy))
    inputs = [xp.asarray(a) for a in (x, gamma, beta, rm, rv)]
    y, cache, new_mean, new_var = batchnorm2d_forward(*inputs, **kwargs_of(case))
    dx, dgamma, dbeta = batchnorm2d_backward(xp.asarray(dy), cache)
    assert_close(y, yt.detach().numpy(), np.float64, scale=float(np.abs(yt.detach().numpy()).max()))
    assert_close(new_mean, rmt.numpy(), np.float64)
    assert_close(new_var, rvt.numpy(), np.float64)
    for ours, theirs in ((dx, xt.grad), (dgamma, gt.grad), (dbeta, bt.grad)):
        assert_close(ours, theirs.numpy(), np.float64, scale=float(theirs.abs().max()))


@given(case=bn_cases())
def test_batchnorm_float32_agrees_with_float64(xp, case):
    outs = {}
    for dtype in (np.float64, np.float32):
        x, gamma, beta, rm, rv, dy = (xp.asarray(a) for a in bn_data(case, dtype))
        y, cache, new_mean, new_var = batchnorm2d_forward(x, gamma, beta, rm, rv, **kwargs_of(case))
        outs[dtype] = (y, new_mean, new_var, *batchnorm2d_backward(dy, cache))
    for a32, a64 in zip(outs[np.float32], outs[np.float64]):
        assert a32.dtype == np.float32
        assert_close(a32, a64, np.float32, scale=float(np.abs(to_numpy(a64)).max()))


@given(case=bn_cases())
def test_batchnorm_is_pure(xp, case):
    arrays = [xp.asarray(a) for a in bn_data(case)[:5]]
    copies = [a.copy() for a in arrays]
    batchnorm2d_forward(*arrays, **kwargs_of(case))
    for a, before in zip(arrays, copies):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(before))


def test_batchnorm_without_running_stats_in_training(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 3, 2, 2)))
    g, b = xp.ones(3), xp.zeros(3)
    y, _, new_mean, new_var = batchnorm2d_forward(x, g, b, None, None)
    y_ref, _, _, _ = batchnorm2d_forward(x, g, b, xp.zeros(3), xp.ones(3))
    assert new_mean is None and new_var is None
    np.testing.assert_array_equal(to_numpy(y), to_numpy(y_ref))  # same arithmetic either way


def test_batchnorm_defaults_are_torchs(xp):
    """momentum 0.1 and eps 1e-5 by default (torch.nn.BatchNorm2d's), against the loop spec."""
    x, gamma, beta, rm, rv, _ = bn_data(((2, 3, 2, 2), True, 0.1, 1e-5, 7))
    y, _, new_mean, new_var = batchnorm2d_forward(*(xp.asarray(a) for a in (x, gamma, beta, rm, rv)))
    y_spec, mean_spec, var_spec = bn_spec(x, gamma, beta, rm, rv, True, 0.1, 1e-5)
    assert_close(y, y_spec, np.float64, scale=float(np.abs(y_spec).max()))
    assert_close(new_mean, mean_spec, np.float64)
    assert_close(new_var, var_spec, np.float64)


def test_batchnorm_rejects_bad_input(xp):
    x, c3 = xp.zeros((2, 3, 2, 2)), xp.ones(3)
    with pytest.raises(
        ValueError, match=r"x: expected a 4-d array \(N, C, H, W\), got shape \(2, 3, 4\)"
    ):
        batchnorm2d_forward(xp.zeros((2, 3, 4)), c3, c3, c3, c3)
    with pytest.raises(
        ValueError, match=r"gamma: expected shape \(3,\) for x with 3 channels.*got \(4,\)"
    ):
        batchnorm2d_forward(x, xp.ones(4), c3, c3, c3)
    with pytest.raises(ValueError, match=r"running_var: expected shape \(3,\).*got \(3, 1\)"):
        batchnorm2d_forward(x, c3, c3, c3, xp.ones((3, 1)))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int64"):
        batchnorm2d_forward(xp.zeros((2, 3, 2, 2), dtype=xp.int64), c3, c3, c3, c3)
    with pytest.raises(TypeError, match="dtypes differ.*gamma: float32"):
        batchnorm2d_forward(x, c3.astype(xp.float32), c3, c3, c3)
    with pytest.raises(ValueError, match="expected both arrays or both None"):
        batchnorm2d_forward(x, c3, c3, c3, None)
    with pytest.raises(ValueError, match=r"eval mode \(training=False\): expected running_mean"):
        batchnorm2d_forward(x, c3, c3, None, None, training=False)
    with pytest.raises(
        ValueError, match=r"more than 1 value per channel.*got x shape \(1, 3, 1, 1\)"
    ):
        batchnorm2d_forward(xp.zeros((1, 3, 1, 1)), c3, c3, c3, c3)
    with pytest.raises(ValueError, match=r"^beta: expected shape \(3,\) for x with 3 channels"):
        batchnorm2d_forward(x, c3, xp.ones(2), c3, c3)
    _, cache, _, _ = batchnorm2d_forward(x, c3, c3, c3, c3)
    with pytest.raises(TypeError, match="^dy: expected a numpy or cupy array, got list"):
        batchnorm2d_backward([0.0], cache)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3, 2, 2\), got \(2, 3, 2\)"):
        batchnorm2d_backward(xp.zeros((2, 3, 2)), cache)
    with pytest.raises(TypeError, match="dy: expected dtype float64, got float32"):
        batchnorm2d_backward(xp.zeros((2, 3, 2, 2), dtype=xp.float32), cache)


def test_batchnorm_rejects_mixed_backends():
    x, c3 = np.zeros((2, 3, 2, 2)), np.ones(3)
    with pytest.raises(TypeError, match="mix array libraries"):
        batchnorm2d_forward(x, ForeignArray(c3), c3, c3, c3)
    _, cache, _, _ = batchnorm2d_forward(x, c3, c3, c3, c3)
    with pytest.raises(TypeError, match="mix array libraries"):
        batchnorm2d_backward(ForeignArray(x), cache)
