"""Tests of relu_forward/backward.

Oracles: an elementwise loop spec, the adjoint test in float64 (inputs kept away
from the kink at 0), PyTorch CPU (F.relu, float64 autograd, including exact zeros),
and float32 vs float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ForeignArray, check_float32_matches_float64
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test
from refdlrt.ops.activation import relu_backward, relu_forward


@st.composite
def relu_cases(draw):
    """(shape, seed): any shape of 1 to 4 dims."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    return shape, draw(st.integers(0, 2**32 - 1))


def relu_data(case, dtype=np.float64, zeros=False):
    """x with values at least 0.1 away from 0 (or with some exact zeros), and dy."""
    shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=shape) * (0.1 + rng.random(shape))
    if zeros:
        x[rng.random(shape) < 0.3] = 0.0
    dy = rng.standard_normal(shape)
    return x.astype(dtype), dy.astype(dtype)


def relu_spec(x):
    """y = max(x, 0), one element at a time."""
    return np.array([max(v, 0.0) for v in x.ravel()]).reshape(x.shape)


@given(case=relu_cases())
def test_relu_forward_matches_loop_spec(xp, case):
    x, _ = relu_data(case, zeros=True)
    y, _ = relu_forward(xp.asarray(x))
    np.testing.assert_array_equal(to_numpy(y), relu_spec(x))  # max(x, 0) is exact


@given(case=relu_cases())
def test_relu_backward_passes_adjoint_test(xp, case):
    x, _ = relu_data(case)
    x = xp.asarray(x)
    _, cache = relu_forward(x)
    (result,) = adjoint_test(
        lambda x: relu_forward(x)[0],
        lambda c: relu_backward(c, cache),
        [x],
        np.random.default_rng(case[1] + 1),
    )
    assert result.ok, result


@pytest.mark.torch
@given(case=relu_cases())
def test_relu_matches_torch_including_zeros(xp, torch, case):
    x, dy = relu_data(case, zeros=True)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.relu(xt)
    yt.backward(torch.tensor(dy))
    y, cache = relu_forward(xp.asarray(x))
    np.testing.assert_array_equal(to_numpy(y), yt.detach().numpy())  # both select x or 0
    np.testing.assert_array_equal(to_numpy(relu_backward(xp.asarray(dy), cache)), xt.grad.numpy())


@given(case=relu_cases())
def test_relu_float32_agrees_with_float64(xp, case):
    x, dy = relu_data(case)
    check_float32_matches_float64(relu_forward, relu_backward, x, dy, xp)


@pytest.mark.torch
def test_relu_propagates_nan_like_torch(xp, torch):
    x = np.array([np.nan, -1.0, 0.0, 2.0])
    y, _ = relu_forward(xp.asarray(x))
    np.testing.assert_array_equal(to_numpy(y), torch.relu(torch.tensor(x)).numpy())


def test_relu_special_values(xp):
    """-inf, -0 and +0 give a zero (its sign is not specified); the backward blocks even an
    infinite or NaN dy where x <= 0 (no inf * 0 = NaN), and passes it unchanged where x > 0."""
    x = np.array([-np.inf, -0.0, 0.0, np.inf, -1.0, 3.0])
    y, cache = relu_forward(xp.asarray(x))
    np.testing.assert_array_equal(to_numpy(y), [0.0, 0.0, 0.0, np.inf, 0.0, 3.0])  # -0 == +0
    dx = to_numpy(relu_backward(xp.asarray([np.inf, np.nan, -np.inf, np.nan, 5.0, -np.inf]), cache))
    assert dx.tobytes() == np.array([0.0, 0.0, 0.0, np.nan, 0.0, -np.inf]).tobytes()


def test_relu_rejects_bad_input(xp):
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int64"):
        relu_forward(xp.arange(3))
    with pytest.raises(TypeError, match="x: expected a numpy or cupy array, got list"):
        relu_forward([1.0, 2.0])
    _, cache = relu_forward(xp.zeros((2, 3)))
    with pytest.raises(TypeError, match="^dy: expected a numpy or cupy array, got list"):
        relu_backward([[1.0] * 3] * 2, cache)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\), got \(3, 2\)"):
        relu_backward(xp.zeros((3, 2)), cache)
    with pytest.raises(TypeError, match="dy: expected dtype float64, got float32"):
        relu_backward(xp.zeros((2, 3), dtype=xp.float32), cache)


def test_relu_rejects_mixed_backends():
    _, cache = relu_forward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="mix array libraries"):
        relu_backward(ForeignArray(np.zeros((2, 3))), cache)
