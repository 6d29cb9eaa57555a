"""Test the testers: plant wrong convolution derivatives (and wrong forwards) and check that
every oracle used in tests/test_conv.py notices, while the correct code passes all of them.

Oracles: ``adjoint_test`` (central differences, float64), ``linear_adjoint_check`` (exact
adjoint of a linear map), the loop specs ``conv2d_naive`` / ``conv2d_naive_backward``, and
PyTorch (``torch.nn.functional.conv2d`` with float64 autograd).
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from refdlrt.backend import to_numpy
from refdlrt.gradcheck import adjoint_test, linear_adjoint_check
from refdlrt.ops import conv
from refdlrt.ops.conv import conv2d_backward, conv2d_forward
from refdlrt.ops.conv_naive import conv2d_naive, conv2d_naive_backward
from refdlrt.tolerances import assert_close

# (x shape, w shape, stride, padding, dilation); C_in == C_out so the channel axes can be swapped,
# every output size >= 2 so that dropping one output row changes db.
GEOMETRIES = {
    "plain": ((2, 3, 7, 6), (3, 3, 3, 2), 1, 1, 1),
    "strided-dilated": ((2, 3, 9, 8), (3, 3, 3, 3), (2, 1), (1, 0), (1, 2)),
}
ROUTES = {"col2im": conv._dx_by_col2im, "transposed": conv._dx_by_transposed_conv}


def data(name, seed=3):
    x_shape, w_shape, stride, padding, dilation = GEOMETRIES[name]
    rng = np.random.default_rng(seed)
    x, w, b = (
        rng.standard_normal(x_shape),
        rng.standard_normal(w_shape),
        rng.standard_normal(w_shape[0]),
    )
    kw = {"stride": stride, "padding": padding, "dilation": dilation}
    dy = rng.standard_normal(conv2d_forward(x, w, b, **kw)[0].shape)
    return (x, w, b), dy, kw


def with_stride_plus_one(kw):
    s = kw["stride"]
    sh, sw = (s, s) if isinstance(s, int) else s
    return {**kw, "stride": (sh + 1, sw)}


# A planted backward takes (dy, x, w, b, kw) and returns (dx, dw, db); `wrong` names the
# gradient that is wrong (x: 0, w: 1, b: 2).
def correct(dy, x, w, b, kw):
    return conv2d_backward(dy, conv2d_forward(x, w, b, **kw)[1])


def dw_scaled(dy, x, w, b, kw):
    dx, dw, db = correct(dy, x, w, b, kw)
    return dx, dw * 1.001, db


def dx_kernel_flipped(dy, x, w, b, kw):  # the convolution / correlation mix-up
    dx = conv2d_backward(
        dy, conv2d_forward(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, **kw)[1]
    )[0]
    return dx, *correct(dy, x, w, b, kw)[1:]


def dx_channels_swapped(dy, x, w, b, kw):  # w[o, c] used as w[c, o]
    dx = conv2d_backward(
        dy, conv2d_forward(x, np.ascontiguousarray(w.transpose(1, 0, 2, 3)), b, **kw)[1]
    )[0]
    return dx, *correct(dy, x, w, b, kw)[1:]


def stride_off_by_one(dy, x, w, b, kw):  # windows placed with stride + 1 along the height
    wrong = with_stride_plus_one(kw)
    ho = conv2d_naive(x, w, b, **wrong).shape[2]
    dx, dw, _ = conv2d_naive_backward(dy[:, :, :ho], x, w, b, **wrong)  # the rows it can place
    return dx, dw, correct(dy, x, w, b, kw)[2]


def db_missing_first_row(dy, x, w, b, kw):
    dx, dw, _ = correct(dy, x, w, b, kw)
    return dx, dw, dy[:, :, 1:, :].sum(axis=(0, 2, 3))


PLANTED = {
    "dw*1.001": (dw_scaled, {1}),
    "dx flipped kernel": (dx_kernel_flipped, {0}),
    "dx swapped channels": (dx_channels_swapped, {0}),
    "stride+1": (stride_off_by_one, {0, 1}),
    "db off-by-one": (db_missing_first_row, {2}),
}


def check_adjoint(backward, name):
    (x, w, b), _, kw = data(name)
    f = lambda *a: conv2d_forward(*a, **kw)[0]
    vjp = lambda c: backward(c, x, w, b, kw)
    return {r.wrt: r for r in adjoint_test(f, vjp, [x, w, b], np.random.default_rng(11))}


def torch_grads(torch, dy, x, w, b, kw):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.conv2d(xt, wt, bt, **kw).backward(torch.tensor(dy))
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


# ----------------------------------------------------------------------------- positive controls


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_correct_backward_passes_every_oracle(torch, name, route):
    (x, w, b), dy, kw = data(name)
    with mock.patch.object(conv, "_select_dx_route", lambda g: ROUTES[route]):
        results = check_adjoint(correct, name)
        grads = correct(dy, x, w, b, kw)
    assert sorted(results) == [0, 1, 2] and all(r.ok for r in results.values())
    for ours, naive, ref in zip(
        grads, conv2d_naive_backward(dy, x, w, b, **kw), torch_grads(torch, dy, x, w, b, kw)
    ):
        assert_close(ours, naive, np.float64, scale=100.0)  # |entries| <~ 100 for these sizes
        assert_close(ours, ref, np.float64, scale=100.0)


# ----------------------------------------------------------------------------- planted backwards


@pytest.mark.parametrize("planted", sorted(PLANTED))
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_adjoint_test_catches_planted_backward(name, planted):
    backward, wrong = PLANTED[planted]
    results = check_adjoint(backward, name)
    for k, r in results.items():
        assert r.ok == (k not in wrong), f"input {k}: rel error {r.rel_error:.2e} (wrong: {wrong})"


@pytest.mark.parametrize("planted", sorted(PLANTED))
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_naive_and_torch_comparisons_catch_planted_backward(torch, name, planted):
    backward, wrong = PLANTED[planted]
    (x, w, b), dy, kw = data(name)
    grads = backward(dy, x, w, b, kw)
    naive = conv2d_naive_backward(dy, x, w, b, **kw)
    ref = torch_grads(torch, dy, x, w, b, kw)
    for k in range(3):
        if k in wrong:
            with pytest.raises(AssertionError):
                assert_close(grads[k], naive[k], np.float64, scale=100.0)
            with pytest.raises(AssertionError):
                np.testing.assert_allclose(grads[k], ref[k], rtol=1e-10, atol=1e-10)
        else:
            assert_close(grads[k], ref[k], np.float64, scale=100.0)


# ----------------------------------------------------------------------------- planted forwards


def fwd_kernel_flipped(x, w, b, kw):
    return conv2d_forward(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b, **kw)[0]


def fwd_window_shifted(x, w, b, kw):  # output (oh, ow) reads the window of (oh, ow + 1)
    y = conv2d_forward(x, w, b, **kw)[0]
    return np.concatenate([y[..., 1:], y[..., -1:]], axis=-1)


def fwd_bias_twice(x, w, b, kw):
    return conv2d_forward(x, w, b, **kw)[0] + b[None, :, None, None]


def fwd_stride_off_by_one(x, w, b, kw):
    y = conv2d_naive(x, w, b, **with_stride_plus_one(kw))
    full = conv2d_forward(x, w, b, **kw)[0].copy()
    full[:, :, : y.shape[2], : y.shape[3]] = y
    return full


PLANTED_FORWARDS = {
    "flipped kernel": fwd_kernel_flipped,
    "shifted window": fwd_window_shifted,
    "bias twice": fwd_bias_twice,
    "stride+1": fwd_stride_off_by_one,
}


@pytest.mark.parametrize("planted", sorted(PLANTED_FORWARDS))
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_every_oracle_catches_planted_forward(torch, name, planted):
    (x, w, b), _, kw = data(name)
    y = PLANTED_FORWARDS[planted](x, w, b, kw)
    with pytest.raises(AssertionError):
        assert_close(y, conv2d_naive(x, w, b, **kw), np.float64, scale=30.0)  # |y| <~ 30 here
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(
            y,
            torch.nn.functional.conv2d(*map(torch.tensor, (x, w, b)), **kw).numpy(),
            rtol=1e-10,
            atol=1e-10,
        )
    # The correct backward is not the derivative of a wrong forward (bias twice only breaks db).
    f = lambda *a: PLANTED_FORWARDS[planted](*a, kw)
    vjp = lambda c: correct(c, x, w, b, kw)
    results = adjoint_test(f, vjp, [x, w, b], np.random.default_rng(5))
    assert not all(r.ok for r in results)


# ----------------------------------------------------------------------------- linear adjoint check


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_linear_adjoint_check_of_conv_in_x_and_in_w(xp, name, route):
    (x, w, _), _, kw = data(name)
    x, w = xp.asarray(x), xp.asarray(w)
    with mock.patch.object(conv, "_select_dx_route", lambda g: ROUTES[route]):
        _, cache = conv2d_forward(x, w, **kw)
        in_x = linear_adjoint_check(
            lambda v: conv2d_forward(v, w, **kw)[0],
            lambda c: conv2d_backward(c, cache)[0],
            x.shape,
            np.random.default_rng(1),
            xp=xp,
        )
        in_w = linear_adjoint_check(
            lambda v: conv2d_forward(x, v, **kw)[0],
            lambda c: conv2d_backward(c, cache)[1],
            w.shape,
            np.random.default_rng(2),
            xp=xp,
        )
    assert in_x.ok and in_w.ok, (in_x, in_w)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_linear_adjoint_check_catches_wrong_adjoints(xp, name):
    (x, w, _), _, kw = data(name)
    x, w = xp.asarray(x), xp.asarray(w)
    A = lambda v: conv2d_forward(v, w, **kw)[0]
    flipped = conv2d_forward(x, xp.ascontiguousarray(w[:, :, ::-1, ::-1]), **kw)[1]
    swapped = conv2d_forward(x, xp.ascontiguousarray(w.transpose(1, 0, 2, 3)), **kw)[1]
    wrong_adjoints = {
        "flipped kernel": lambda c: conv2d_backward(c, flipped)[0],
        "swapped channels": lambda c: conv2d_backward(c, swapped)[0],
        "stride+1": lambda c: stride_off_by_one(c, x, w, None, kw)[0],
        "scaled by 1.001": lambda c: 1.001 * conv2d_backward(c, conv2d_forward(x, w, **kw)[1])[0],
    }
    for label, AT in wrong_adjoints.items():
        r = linear_adjoint_check(A, AT, x.shape, np.random.default_rng(1), xp=xp)
        assert not r.ok, f"{label}: rel error {r.rel_error:.2e} passed"
        assert float(to_numpy(abs(r.lhs - r.rhs))) > 0
