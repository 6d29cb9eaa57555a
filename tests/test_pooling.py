"""Tests of maxpool2d and avgpool2d forward/backward.

Oracles: loop specs over every output window (forward and backward, with ties and
overlapping windows), the adjoint test in float64 (max pooling on tie-free inputs),
PyTorch CPU (F.max_pool2d, F.avg_pool2d, float64 autograd), and float32 vs float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import ForeignArray, check_float32_matches_float64
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test
from refdlrt.ops.pooling import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from refdlrt.tolerances import assert_close

POOLS = {
    "max": (maxpool2d_forward, maxpool2d_backward),
    "avg": (avgpool2d_forward, avgpool2d_backward),
}




@st.composite
def pool_cases(draw):
    """A valid geometry first (kernel, stride, padding <= kernel // 2, H, W with output >= 1),
    then a seed for the data. Arguments are passed as an int or a pair, stride maybe None."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    H = draw(st.integers(max(1, kh - 2 * ph), 7))
    W = draw(st.integers(max(1, kw - 2 * pw), 7))
    N, C = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kernel = kh if kh == kw and draw(st.booleans()) else (kh, kw)
    padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    if stride is not None and stride[0] == stride[1] and draw(st.booleans()):
        stride = stride[0]
    return (
        (N, C, H, W),
        {"kernel_size": kernel, "stride": stride, "padding": padding},
        draw(st.integers(0, 2**32 - 1)),
    )


def geometry(kernel_size, stride, padding):
    as_pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
    k = as_pair(kernel_size)
    return k, (k if stride is None else as_pair(stride)), as_pair(padding)


def pool_spec(kind, x, dy, kernel_size, stride, padding):
    """Loop over every output window: (y, dx). Padding is -inf (max) or 0 (avg, counted in
    the divisor kh * kw); max routes dy to the first maximum in row-major window order and
    overlapping windows add up."""
    (kh, kw), (sh, sw), (ph, pw) = geometry(kernel_size, stride, padding)
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    y, dx = np.zeros((N, C, Ho, Wo)), np.zeros(x.shape)
    for n in range(N):
        for c in range(C):
            for oh in range(Ho):
                for ow in range(Wo):
                    window = [
                        (h, w)
                        for i in range(kh)
                        for j in range(kw)
                        if 0 <= (h := oh * sh - ph + i) < H and 0 <= (w := ow * sw - pw + j) < W
                    ]
                    if kind == "max":
                        best = window[0]
                        for hw in window[1:]:
                            if x[n, c][hw] > x[n, c][best]:
                                best = hw
                        y[n, c, oh, ow] = x[n, c][best]
                        dx[n, c][best] += dy[n, c, oh, ow]
                    else:
                        y[n, c, oh, ow] = sum(x[n, c][hw] for hw in window) / (kh * kw)
                        for hw in window:
                            dx[n, c][hw] += dy[n, c, oh, ow] / (kh * kw)
    return y, dx


def pool_data(case, dtype=np.float64, ties=False):
    """x: standard normal, or (ties=True) small integers so that windows hold equal maxima."""
    shape, kwargs, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=shape).astype(float) if ties else rng.standard_normal(shape)
    y_shape = maxpool2d_forward(np.zeros(shape), **kwargs)[0].shape
    dy = rng.standard_normal(y_shape)
    return x.astype(dtype), dy.astype(dtype)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("ties", [False, True])
@given(case=pool_cases())
def test_pool_matches_loop_spec(xp, kind, ties, case):
    forward, backward = POOLS[kind]
    x, dy = pool_data(case, ties=ties)
    y, cache = forward(xp.asarray(x), **case[1])
    dx = backward(xp.asarray(dy), cache)
    y_spec, dx_spec = pool_spec(kind, x, dy, **case[1])
    assert y.shape == y_spec.shape and dx.shape == x.shape
    assert_close(y, y_spec, np.float64)
    assert_close(dx, dx_spec, np.float64)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(case=pool_cases())
def test_pool_backward_passes_adjoint_test(xp, kind, case):
    forward, backward = POOLS[kind]
    shape, kwargs, seed = case
    rng = np.random.default_rng(seed)
    # Distinct values in [0, 1) spaced 1 / size >= 3e-3 apart: a perturbation of size
    # fd_eps * |t| (about 1e-6 * 5) cannot change any argmax.
    size = int(np.prod(shape))
    x = xp.asarray(rng.permutation(size).reshape(shape) / size)
    _, cache = forward(x, **kwargs)
    (result,) = adjoint_test(
        lambda x: forward(x, **kwargs)[0], lambda c: backward(c, cache), [x], rng
    )
    assert result.ok, result


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("ties", [False, True])
@given(case=pool_cases())
def test_pool_matches_torch(xp, torch, kind, ties, case):
    forward, backward = POOLS[kind]
    x, dy = pool_data(case, ties=ties)
    (kh, kw), (sh, sw), (ph, pw) = geometry(**case[1])
    torch_pool = {"max": torch.nn.functional.max_pool2d, "avg": torch.nn.functional.avg_pool2d}[
        kind
    ]
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_pool(xt, kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw))
    yt.backward(torch.tensor(dy))
    y, cache = forward(xp.asarray(x), **case[1])
    assert_close(y, yt.detach().numpy(), np.float64)
    assert_close(backward(xp.asarray(dy), cache), xt.grad.numpy(), np.float64)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(case=pool_cases())
def test_pool_float32_agrees_with_float64(xp, kind, case):
    forward, backward = POOLS[kind]
    x, dy = pool_data(case)
    check_float32_matches_float64(forward, backward, x, dy, xp, **case[1])


@pytest.mark.torch
def test_maxpool_ties_route_to_first_max_like_torch(xp, torch):
    # A constant image: every window is one big tie; overlapping 3x3 windows, stride 1.
    x = np.ones((1, 1, 4, 5))
    dy = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 3, stride=1).backward(torch.tensor(dy))
    _, cache = maxpool2d_forward(xp.asarray(x), 3, stride=1)
    dx = to_numpy(maxpool2d_backward(xp.asarray(dy), cache))
    expected = np.zeros((4, 5))  # window (oh, ow) starts at (oh, ow): its first element
    expected[:2, :3] = dy[0, 0]
    np.testing.assert_array_equal(dx[0, 0], expected)  # sums of single terms are exact
    np.testing.assert_array_equal(dx, xt.grad.numpy())


@pytest.mark.torch
def test_maxpool_propagates_nan_like_torch(xp, torch):
    x = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    y, _ = maxpool2d_forward(xp.asarray(x), 2)
    np.testing.assert_array_equal(
        to_numpy(y), torch.nn.functional.max_pool2d(torch.tensor(x), 2).numpy()
    )


@pytest.mark.torch
def test_maxpool_routes_the_gradient_to_the_last_nan_like_torch(xp, torch):
    # Window 1 holds two NaNs (taps 1 and 3) among finite values; window 2 one NaN at tap 0,
    # after which no finite maximum may take its place; window 3 none.
    x = np.array([[[[1.0, np.nan, np.nan, 0.0, 1.0, 2.0], [5.0, np.nan, 7.0, 8.0, 3.0, 4.0]]]])
    dy = np.array([[[[10.0, 20.0, 30.0]]]])
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).backward(torch.tensor(dy))
    y, cache = maxpool2d_forward(xp.asarray(x), 2)
    dx = to_numpy(maxpool2d_backward(xp.asarray(dy), cache))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1], expected[0, 0, 0, 2], expected[0, 0, 1, 5] = 10.0, 20.0, 30.0
    np.testing.assert_array_equal(dx, expected)
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    np.testing.assert_array_equal(np.isnan(to_numpy(y)), [[[[True, True, False]]]])


@pytest.mark.parametrize("kernel, index", [((2, 2), np.uint8), ((16, 16), np.uint8),
                                           ((1, 257), np.int32), ((16, 17), np.int32)])
def test_maxpool_tap_indices_fit_the_window(xp, kernel, index):
    """Tap indices are uint8 for windows of up to 256 taps (indices 0-255) and int32 beyond;
    the maximum at the window's last-but-one tap (index 254, 255, 255, 270) must get the
    gradient, after a near-tie at tap 3."""
    kh, kw = kernel
    x = -np.ones((1, 1, kh, kw))
    t = kh * kw - 2 if kh * kw > 4 else 3
    x.flat[t] = 2.0
    x.flat[min(3, t - 1)] = 2.0 - 1e-12
    y, cache = maxpool2d_forward(xp.asarray(x), kernel)
    assert cache[0].dtype == index
    dx = to_numpy(maxpool2d_backward(xp.asarray(np.full((1, 1, 1, 1), 3.0)), cache))
    assert to_numpy(y).item() == 2.0
    expected = np.zeros_like(x)
    expected.flat[t] = 3.0
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_errors_name_the_operation(xp, kind):
    forward, _ = POOLS[kind]
    name = {"max": "maxpool2d", "avg": "avgpool2d"}[kind]
    with pytest.raises(ValueError, match=rf"^{name}: kernel_size must be positive"):
        forward(xp.zeros((1, 2, 5, 5)), (0, 2))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_rejects_bad_input(xp, kind):
    forward, backward = POOLS[kind]
    x = xp.zeros((1, 2, 5, 5))
    with pytest.raises(
        ValueError, match=r"x: expected a 4-d array \(N, C, H, W\), got shape \(2, 5, 5\)"
    ):
        forward(xp.zeros((2, 5, 5)), 2)
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64, got int64"):
        forward(xp.zeros((1, 2, 5, 5), dtype=xp.int64), 2)
    with pytest.raises(ValueError, match=r"kernel_size must be positive, got \(0, 2\)"):
        forward(x, (0, 2))
    with pytest.raises(ValueError, match=r"stride must be positive, got \(1, -1\)"):
        forward(x, 2, stride=(1, -1))
    with pytest.raises(ValueError, match=r"padding must be non-negative, got \(-1, -1\)"):
        forward(x, 2, padding=-1)
    with pytest.raises(ValueError, match=r"padding <= \(1, 1\), got \(2, 0\) for kernel \(3, 3\)"):
        forward(x, 3, padding=(2, 0))
    with pytest.raises(ValueError, match=r"output size \(0, 1\) is too small.*input \(5, 5\)"):
        forward(x, (6, 4), padding=0)
    with pytest.raises(TypeError, match="kernel_size: expected an int or a pair of ints, got 2.0"):
        forward(x, 2.0)
    _, cache = forward(x, 2)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 2, 2, 2\), got \(1, 2, 3, 3\)"):
        backward(xp.zeros((1, 2, 3, 3)), cache)
    with pytest.raises(TypeError, match="dy: expected dtype float64, got float32"):
        backward(xp.zeros((1, 2, 2, 2), dtype=xp.float32), cache)


def test_maxpool_rejects_mixed_backends():
    _, cache = maxpool2d_forward(np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(TypeError, match="mix array libraries"):
        maxpool2d_backward(ForeignArray(np.zeros((1, 1, 2, 2))), cache)
