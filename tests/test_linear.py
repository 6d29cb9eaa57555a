"""Tests of linear_forward/backward and flatten_forward/backward.

Oracles: a loop spec written here, the adjoint test in float64, PyTorch CPU
(F.linear, torch.flatten with float64 autograd), and float32 vs float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import ForeignArray
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test, linear_adjoint_check
from refdlrt.ops.linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from refdlrt.tolerances import assert_close


@st.composite
def linear_cases(draw):
    """(N, in, out, with_bias, seed): configuration first, data from the seed later."""
    return (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 5)),
        draw(st.integers(1, 5)),
        draw(st.booleans()),
        draw(st.integers(0, 2**32 - 1)),
    )


def linear_data(case, dtype=np.float64):
    N, fin, fout, with_bias, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, fin)).astype(dtype)
    w = rng.standard_normal((fout, fin)).astype(dtype)
    b = rng.standard_normal(fout).astype(dtype) if with_bias else None
    dy = rng.standard_normal((N, fout)).astype(dtype)
    return x, w, b, dy


def as_xp(xp, *arrays):
    return tuple(None if a is None else xp.asarray(a) for a in arrays)


def linear_spec(x, w, b):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o], by explicit loops."""
    N, fin = x.shape
    fout = w.shape[0]
    y = np.zeros((N, fout))
    for n in range(N):
        for o in range(fout):
            s = math.fsum(x[n, i] * w[o, i] for i in range(fin))
            y[n, o] = s + (b[o] if b is not None else 0.0)
    return y


@given(case=linear_cases())
def test_linear_forward_matches_loop_spec(xp, case):
    x, w, b, _ = linear_data(case)
    y, _ = linear_forward(*as_xp(xp, x, w, b))
    assert y.shape == (x.shape[0], w.shape[0])
    assert_close(y, linear_spec(x, w, b), np.float64)


@given(case=linear_cases())
def test_linear_backward_passes_adjoint_test(xp, case):
    x, w, b, _ = linear_data(case)
    inputs = as_xp(xp, x, w, b)
    _, cache = linear_forward(*inputs)
    results = adjoint_test(
        lambda x, w, b: linear_forward(x, w, b)[0],
        lambda c: linear_backward(c, cache),
        inputs,
        np.random.default_rng(case[-1] + 1),
    )
    assert len(results) == (3 if b is not None else 2)
    assert all(r.ok for r in results), results


@pytest.mark.torch
@given(case=linear_cases())
def test_linear_matches_torch(xp, torch, case):
    x, w, b, dy = linear_data(case)
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
    bt = torch.tensor(b, requires_grad=True) if b is not None else None
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(dy))
    y, cache = linear_forward(*as_xp(xp, x, w, b))
    dx, dw, db = linear_backward(xp.asarray(dy), cache)
    assert_close(y, yt.detach().numpy(), np.float64)
    assert_close(dx, xt.grad.numpy(), np.float64)
    assert_close(dw, wt.grad.numpy(), np.float64)
    if b is None:
        assert db is None
    else:
        assert_close(db, bt.grad.numpy(), np.float64)


@given(case=linear_cases())
def test_linear_float32_agrees_with_float64(xp, case):
    out64, out32 = [], []
    for dtype, out in ((np.float64, out64), (np.float32, out32)):
        x, w, b, dy = as_xp(xp, *linear_data(case, dtype))
        y, cache = linear_forward(x, w, b)
        out += [y, *linear_backward(dy, cache)]
    for a32, a64 in zip(out32, out64):
        if a64 is None:
            assert a32 is None
            continue
        assert a32.dtype == np.float32
        assert_close(a32, a64, np.float32, scale=float(np.abs(to_numpy(a64)).max()))


# ---- flatten ---------------------------------------------------------------------------


@st.composite
def flatten_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=5)))
    return shape, draw(st.integers(0, 2**32 - 1))


def flatten_spec(x):
    """y[n, k] = x[n][unravel(k)] in row-major order, by explicit loops."""
    N, rest = x.shape[0], x.shape[1:]
    y = np.zeros((N, math.prod(rest)))
    for n in range(N):
        for k in range(math.prod(rest)):
            y[n, k] = x[n][np.unravel_index(k, rest)]
    return y


@given(case=flatten_cases())
def test_flatten_forward_matches_loop_spec(xp, case):
    shape, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y, _ = flatten_forward(xp.asarray(x))
    np.testing.assert_array_equal(to_numpy(y), flatten_spec(x))  # a reshape moves values exactly


@given(case=flatten_cases())
def test_flatten_backward_is_exact_adjoint(xp, case):
    shape, seed = case
    _, cache = flatten_forward(xp.zeros(shape))
    result = linear_adjoint_check(
        lambda x: flatten_forward(x)[0],
        lambda dy: flatten_backward(dy, cache),
        shape,
        np.random.default_rng(seed),
        xp=xp,
    )
    assert result.ok, result


@pytest.mark.torch
@given(case=flatten_cases())
def test_flatten_matches_torch(xp, torch, case):
    shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal((shape[0], math.prod(shape[1:])))
    xt = torch.tensor(x, requires_grad=True)
    torch.flatten(xt, 1).backward(torch.tensor(dy))
    y, cache = flatten_forward(xp.asarray(x))
    assert_close(y, torch.flatten(xt, 1).detach().numpy(), np.float64)
    assert_close(flatten_backward(xp.asarray(dy), cache), xt.grad.numpy(), np.float64)


@given(case=flatten_cases())
def test_flatten_float32_agrees_with_float64(xp, case):
    shape, seed = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y64, _ = flatten_forward(xp.asarray(x))
    y32, cache = flatten_forward(xp.asarray(x.astype(np.float32)))
    assert y32.dtype == np.float32
    assert_close(y32, y64, np.float32, scale=float(np.abs(x).max()))
    dx32 = flatten_backward(y32, cache)
    assert dx32.dtype == np.float32 and dx32.shape == shape


# ---- bad input -------------------------------------------------------------------------


def test_linear_rejects_bad_input(xp):
    x, w, b = xp.zeros((2, 3)), xp.zeros((4, 3)), xp.zeros(4)
    with pytest.raises(
        ValueError, match=r"x: expected a 2-d array \(N, in\), got shape \(2, 3, 1\)"
    ):
        linear_forward(xp.zeros((2, 3, 1)), w)
    with pytest.raises(ValueError, match=r"w: expected a 2-d array \(out, in\), got shape \(12,\)"):
        linear_forward(x, xp.zeros(12))
    with pytest.raises(ValueError, match=r"x has 3 features but w expects 5.*\(2, 3\).*\(4, 5\)"):
        linear_forward(x, xp.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"b: expected shape \(4,\), got \(3,\)"):
        linear_forward(x, w, xp.zeros(3))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int64"):
        linear_forward(xp.zeros((2, 3), dtype=xp.int64), w)
    with pytest.raises(TypeError, match="dtypes differ.*x: float64, w: float32"):
        linear_forward(x, w.astype(xp.float32), b)
    _, cache = linear_forward(x, w, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4\), got \(2, 3\)"):
        linear_backward(xp.zeros((2, 3)), cache)
    with pytest.raises(TypeError, match="dy: expected dtype float64, got float32"):
        linear_backward(xp.zeros((2, 4), dtype=xp.float32), cache)


def test_flatten_rejects_bad_input(xp):
    with pytest.raises(
        ValueError, match=r"x: expected an array with >= 2 dims \(N, \.\.\.\), got shape \(5,\)"
    ):
        flatten_forward(xp.zeros(5))
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int32"):
        flatten_forward(xp.zeros((2, 3), dtype=xp.int32))
    _, cache = flatten_forward(xp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 12\), got \(2, 3, 4\)"):
        flatten_backward(xp.zeros((2, 3, 4)), cache)


def test_linear_rejects_mixed_backends():
    x, w = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(TypeError, match="mix array libraries"):
        linear_forward(x, ForeignArray(w))
    _, cache = linear_forward(x, w)
    with pytest.raises(TypeError, match="mix array libraries"):
        linear_backward(ForeignArray(np.zeros((2, 4))), cache)
