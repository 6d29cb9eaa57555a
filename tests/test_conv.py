"""Tests of conv2d forward/backward (refdlrt.ops.conv).

Oracles: the loop specs conv2d_naive / conv2d_naive_backward, an independent forward built
here on scipy.signal.correlate, the adjoint test in float64 (for x, w and b), PyTorch CPU
(F.conv2d forward and float64 autograd), and float32 against float64. The fast path is run
with one block for the whole batch, with blocks of one sample and with blocks of two
(a partial last block when N = 3), and with each of its two routes for dx.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
import scipy.signal
from helpers import ForeignArray
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from refdlrt.backend import gpu_available, to_numpy
from refdlrt.gradcheck import adjoint_test
from refdlrt.ops import conv, conv_patches, conv_weight_grad
from refdlrt.ops.conv import (
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
)
from refdlrt.ops.conv_naive import conv2d_naive, conv2d_naive_backward
from refdlrt.tolerances import assert_close

DX_ROUTES = {"col2im": conv._dx_by_col2im, "transposed": conv._dx_by_transposed_conv}




@dataclass(frozen=True)
class Case:
    """One drawn convolution: shapes, keyword arguments, bias flag, batch block, seed."""

    x_shape: tuple
    w_shape: tuple
    kwargs: dict
    bias: bool
    block: int | None  # samples per batch block of the fast path; None: the default
    seed: int

    def pairs(self):
        p = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        return p(self.kwargs["stride"]), p(self.kwargs["padding"]), p(self.kwargs["dilation"])

    def out_shape(self):
        (sh, sw), (ph, pw), (dh, dw) = self.pairs()
        (N, _, H, W), (O, _, kh, kw) = self.x_shape, self.w_shape
        return (N, O, conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw))

    def data(self, dtype=np.float64):
        """x, w, b (or None), dy as NumPy arrays of ``dtype``."""
        rng = np.random.default_rng(self.seed)
        x, w = rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape)
        b = rng.standard_normal(self.w_shape[0]) if self.bias else None
        dy = rng.standard_normal(self.out_shape())
        cast = lambda a: None if a is None else a.astype(dtype)
        return cast(x), cast(w), cast(b), cast(dy)


def int_or_pair(draw, lo, hi):
    a, b = draw(st.integers(lo, hi)), draw(st.integers(lo, hi))
    return a if a == b and draw(st.booleans()) else (a, b)


@st.composite
def conv_cases(draw):
    """Geometry first (batch 1-3, channels 1-4, sizes 1-9, kernel 1-4, stride 1-3, padding 0-2,
    dilation 1-3 per axis; invalid output sizes rejected), then bias, batch block and a seed."""
    N, C, O = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    kwargs = {
        "stride": int_or_pair(draw, 1, 3),
        "padding": int_or_pair(draw, 0, 2),
        "dilation": int_or_pair(draw, 1, 3),
    }
    case = Case(
        (N, C, H, W),
        (O, C, kh, kw),
        kwargs,
        draw(st.booleans()),
        draw(st.sampled_from([None, 1, 2])),
        draw(st.integers(0, 2**32 - 1)),
    )
    assume(min(case.out_shape()[2:]) >= 1)
    return case


@contextmanager
def fast_path(case, itemsize=8, route="auto", shifts="auto", planes="auto", channel_major="auto"):
    """Run the fast path with ``case.block`` samples per batch block (None: the default
    budget), the given dx route ("auto": the module's own choice), and with ``shifts`` True /
    False the shifted GEMMs forced on / off wherever stride 1 allows them (the forward, and the
    transposed-convolution dx, whose convolution of e has stride 1 always). ``planes`` True /
    False forces the channel-major route of few input planes (the forward and the kernel
    gradient alone, :mod:`refdlrt.ops.conv_planes`) on / off; "auto" leaves it to its rule,
    except where ``shifts`` is forced: then it is off, so the forward takes the route asked for.
    ``channel_major`` True / False forces the kernel gradient's channel-major patches of x
    (:func:`refdlrt.ops.conv_weight_grad._dw_by_channel_major_patches`) on / off where the patches
    of x are taken."""
    select = conv._select_dx_route if route == "auto" else (lambda g: DX_ROUTES[route])
    pays = conv.shifted_route_pays if shifts == "auto" else (lambda *a: shifts)
    if planes == "auto" and shifts != "auto":
        planes = False
    planes_pay = conv.planes_route_pays if planes == "auto" else (lambda *a: planes)
    major_pays = (conv_weight_grad._channel_major_pays if channel_major == "auto"
                  else (lambda *a: channel_major))
    with mock.patch.dict(conv_patches._BLOCK_BYTES), mock.patch.object(conv, "_select_dx_route", select), \
            mock.patch.object(conv, "shifted_route_pays", pays), \
            mock.patch.object(conv, "planes_route_pays", planes_pay), \
            mock.patch.object(conv_weight_grad, "planes_route_pays", planes_pay), \
            mock.patch.object(conv_weight_grad, "_channel_major_pays", major_pays), \
            mock.patch.object(conv_weight_grad, "_one_gemm_blocks", conv_patches._batch_blocks):
        # case.block samples on every route: the budget below counts by conv_patches' own measure
        if case.block is not None:
            g = conv._geometry(np.empty(case.x_shape), np.empty(case.w_shape), None, *case.pairs())
            budget = case.block * conv_patches._block_sample_bytes(g, itemsize)
            conv_patches._BLOCK_BYTES.update(numpy=budget, cupy=budget)
        yield


def to_xp(xp, *arrays):
    return [None if a is None else xp.asarray(a) for a in arrays]


def sum_bound(*arrays, terms):
    """Bound on the sum of |terms| of a dot product: terms * prod(max |a|); the magnitude that
    summation-order rounding scales with (used as ``scale`` of assert_close)."""
    return float(terms * np.prod([np.abs(a).max() for a in arrays]))


def scales(case, x, w, b, dy):
    """Magnitudes of y, dx, dw, db: numbers of terms per entry times the largest factors."""
    (N, C, _, _), (O, _, kh, kw), (_, _, Ho, Wo) = case.x_shape, case.w_shape, case.out_shape()
    return (
        sum_bound(x, w, terms=C * kh * kw) + (0.0 if b is None else float(np.abs(b).max())),
        sum_bound(dy, w, terms=O * kh * kw),
        sum_bound(dy, x, terms=N * Ho * Wo),
        sum_bound(dy, terms=N * Ho * Wo),
    )


def scipy_conv2d(x, w, b, stride, padding, dilation):
    """Independent forward: per (n, o, c) a 'valid' scipy.signal.correlate of the zero-padded
    image with the zero-dilated kernel (stride 1), summed over c, then subsampled by the stride."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    O, C, kh, kw = w.shape
    wd = np.zeros((O, C, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    wd[:, :, ::dh, ::dw] = w
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.array(
        [
            [
                sum(scipy.signal.correlate(xpad[n, c], wd[o, c], mode="valid") for c in range(C))
                for o in range(O)
            ]
            for n in range(x.shape[0])
        ]
    )
    y = y[:, :, ::sh, ::sw]
    return y if b is None else y + b[None, :, None, None]


# ----------------------------------------------------------------------------- forward


FORWARD_ROUTES = {"im2col": dict(shifts=False), "shifted": dict(shifts=True), "planes": dict(planes=True)}


@pytest.mark.parametrize("forward", sorted(FORWARD_ROUTES))
@given(case=conv_cases())
def test_forward_matches_loop_spec(xp, forward, case):
    data = case.data()
    x, w, b, _ = to_xp(xp, *data)
    with fast_path(case, **FORWARD_ROUTES[forward]):
        y, _ = conv2d_forward(x, w, b, **case.kwargs)
    assert y.shape == case.out_shape() and y.dtype == np.float64
    spec = conv2d_naive(x, w, b, **case.kwargs)
    assert_close(y, spec, np.float64, scale=scales(case, *data)[0])


@pytest.mark.parametrize("forward", sorted(FORWARD_ROUTES))
@given(case=conv_cases())
def test_forward_matches_scipy_correlate(xp, forward, case):
    x, w, b, dy = case.data()
    with fast_path(case, **FORWARD_ROUTES[forward]):
        y, _ = conv2d_forward(*to_xp(xp, x, w, b), **case.kwargs)
    expected = scipy_conv2d(x, w, b, *case.pairs())
    assert expected.shape == case.out_shape()
    assert_close(y, expected, np.float64, scale=scales(case, x, w, b, dy)[0])


# ----------------------------------------------------------------------------- backward


@pytest.mark.parametrize("route, shifts", [("auto", "auto"), ("col2im", False), ("transposed", False),
                                           ("transposed", True)])
@given(case=conv_cases())
def test_backward_passes_adjoint_test(xp, route, shifts, case):
    x, w, b, _ = to_xp(xp, *case.data())
    inputs = [x, w] if b is None else [x, w, b]
    with fast_path(case, route=route, shifts=shifts):
        f = lambda *a: conv2d_forward(*a, **case.kwargs)[0]
        _, cache = conv2d_forward(*inputs, **case.kwargs)
        vjp = lambda c: conv2d_backward(c, cache)[: len(inputs)]
        results = adjoint_test(f, vjp, inputs, np.random.default_rng(case.seed + 1))
    assert [r.wrt for r in results] == list(range(len(inputs)))
    for r in results:
        assert r.ok, (
            f"input {r.wrt}: <J t, c> = {r.lhs}, <t, J^T c> = {r.rhs}, rel {r.rel_error:.2e}"
        )


@pytest.mark.parametrize("route, shifts, channel_major", [("col2im", True, False), ("transposed", False, True),
                                                          ("transposed", True, "auto")])
@given(case=conv_cases())
def test_backward_matches_loop_spec(xp, route, shifts, channel_major, case):
    data = case.data()
    x, w, b, dy = to_xp(xp, *data)
    with fast_path(case, route=route, shifts=shifts, channel_major=channel_major):
        dx, dw, db = conv2d_backward(dy, conv2d_forward(x, w, b, **case.kwargs)[1])
    ndx, ndw, ndb = conv2d_naive_backward(dy, x, w, b, **case.kwargs)
    s = scales(case, *data)
    assert_close(dx, ndx, np.float64, scale=s[1])
    assert_close(dw, ndw, np.float64, scale=s[2])
    assert (db is None) == (b is None) and (ndb is None) == (b is None)
    if b is not None:
        assert_close(db, ndb, np.float64, scale=s[3])


@pytest.mark.torch
@pytest.mark.parametrize("route, shifts, planes, channel_major", [
    ("auto", "auto", "auto", "auto"), ("transposed", True, False, False), ("auto", "auto", True, "auto"),
    ("col2im", False, False, True)])
@given(case=conv_cases())
def test_forward_and_backward_match_torch(xp, torch, route, shifts, planes, channel_major, case):
    x, w, b, dy = case.data()
    with fast_path(case, route=route, shifts=shifts, planes=planes, channel_major=channel_major):
        y, cache = conv2d_forward(*to_xp(xp, x, w, b), **case.kwargs)
        dx, dw, db = conv2d_backward(xp.asarray(dy), cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    stride, padding, dilation = case.pairs()
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation)
    yt.backward(torch.tensor(dy))
    s = scales(case, x, w, b, dy)
    assert_close(y, yt.detach().numpy(), np.float64, scale=s[0])
    assert_close(dx, xt.grad.numpy(), np.float64, scale=s[1])
    assert_close(dw, wt.grad.numpy(), np.float64, scale=s[2])
    if b is not None:
        assert_close(db, bt.grad.numpy(), np.float64, scale=s[3])


@given(case=conv_cases())
def test_float32_agrees_with_float64(xp, case):
    # float64 is run on the float32-rounded data, so the difference is float32 arithmetic only;
    # its size scales with the sum of |terms| of each entry (see `scales`).
    x, w, b, dy = case.data(np.float32)
    up = lambda a: None if a is None else a.astype(np.float64)
    with fast_path(case, itemsize=4):
        y32, c32 = conv2d_forward(*to_xp(xp, x, w, b), **case.kwargs)
        g32 = conv2d_backward(xp.asarray(dy), c32)
    with fast_path(case):
        y64, c64 = conv2d_forward(*to_xp(xp, up(x), up(w), up(b)), **case.kwargs)
        g64 = conv2d_backward(xp.asarray(up(dy)), c64)
    assert y32.dtype == np.float32 and all(g is None or g.dtype == np.float32 for g in g32)
    for a32, a64, s in zip((y32, *g32), (y64, *g64), scales(case, x, w, b, dy)):
        assert (a32 is None) == (a64 is None)
        if a32 is not None:
            assert_close(a32, a64, np.float32, scale=s)


@pytest.mark.torch
@pytest.mark.parametrize("route, shifts", [("col2im", False), ("transposed", False), ("transposed", True)])
@pytest.mark.parametrize(
    "geometry",
    [
        # every window lies in the padding: y = b, dx = 0 (empty dy lattice, transposed route)
        ((2, 2, 1, 1), (3, 2, 1, 1), {"stride": 3, "padding": 2, "dilation": 1}),
        # padding wider than the dilated kernel: some outputs see only padding
        ((1, 2, 3, 4), (2, 2, 2, 1), {"stride": 1, "padding": (3, 2), "dilation": (2, 1)}),
        # stride larger than the kernel: some input rows are in no window (their dx is 0)
        ((1, 1, 8, 7), (2, 1, 2, 2), {"stride": (3, 4), "padding": 0, "dilation": 1}),
    ],
)
def test_edge_geometries_match_loop_spec_and_torch(xp, torch, route, shifts, geometry):
    x_shape, w_shape, kwargs = geometry
    case = Case(x_shape, w_shape, kwargs, True, None, 5)
    x, w, b, dy = case.data()
    with fast_path(case, route=route, shifts=shifts):
        y, cache = conv2d_forward(*to_xp(xp, x, w, b), **kwargs)
        grads = conv2d_backward(xp.asarray(dy), cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, **dict(zip(kwargs, case.pairs())))
    yt.backward(torch.tensor(dy))
    naive = conv2d_naive_backward(dy, x, w, b, **kwargs)
    for ours, spec, ref, s in zip(
        (y, *grads),
        (conv2d_naive(x, w, b, **kwargs), *naive),
        (yt, xt.grad, wt.grad, bt.grad),
        scales(case, x, w, b, dy),
    ):
        assert_close(ours, spec, np.float64, scale=s)
        assert_close(ours, ref.detach().numpy(), np.float64, scale=s)


def test_larger_batch_uses_several_blocks_and_matches_loop_spec(xp):
    # A batch bigger than one block of the default NumPy budget, so the real blocking is
    # exercised: 40 samples of a (16 x 16) x (3 x 3 x 32) float64 patch matrix.
    case = Case(
        (40, 32, 16, 16), (8, 32, 3, 3), {"stride": 1, "padding": 1, "dilation": 1}, True, None, 7
    )
    g = conv._geometry(np.empty(case.x_shape), np.empty(case.w_shape), None, *case.pairs())
    nb, blocks = conv._batch_blocks(g, np, 8)  # the NumPy budget (a GPU takes one block)
    assert len(blocks) >= 2 and blocks[-1][1] - blocks[-1][0] < nb  # several, the last partial
    data = case.data()
    x, w, b, dy = to_xp(xp, *data)
    y, cache = conv2d_forward(x, w, b, padding=1)
    grads = conv2d_backward(dy, cache)
    spec = (conv2d_naive(x, w, b, padding=1), *conv2d_naive_backward(dy, x, w, b, padding=1))
    for ours, expected, s in zip((y, *grads), spec, scales(case, *data)):
        assert_close(ours, expected, np.float64, scale=s)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.torch
@settings(max_examples=60)
@given(
    size=st.integers(1, 12),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_conv_output_size_matches_torch_shapes(torch, size, kernel, stride, padding, dilation):
    n = conv_output_size(size, kernel, stride, padding, dilation)
    x, w = torch.zeros(1, 1, size, 2), torch.zeros(1, 1, kernel, 1)
    run = lambda: torch.nn.functional.conv2d(
        x, w, stride=stride, padding=padding, dilation=dilation
    )
    if n >= 1:
        assert tuple(run().shape) == (1, 1, n, conv_output_size(2, 1, stride, padding, dilation))
    else:
        with pytest.raises(RuntimeError):
            run()


# ----------------------------------------------------------------------------- validation


def test_forward_rejects_bad_input(xp):
    x, w, b = xp.zeros((1, 3, 5, 5)), xp.zeros((4, 3, 3, 3)), xp.zeros(4)
    bad = [
        (
            ValueError,
            r"x: expected a 4-d array \(N, C_in, H, W\), got shape \(3, 5, 5\)",
            (xp.zeros((3, 5, 5)), w, b),
            {},
        ),
        (
            ValueError,
            r"w: expected a 4-d array \(C_out, C_in, kh, kw\), got shape \(4, 3, 3\)",
            (x, xp.zeros((4, 3, 3)), b),
            {},
        ),
        (
            ValueError,
            r"w: expected 3 input channels \(x.shape\[1\]\), got w.shape\[1\] = 2",
            (x, xp.zeros((4, 2, 3, 3)), b),
            {},
        ),
        (ValueError, r"b: expected shape \(4,\) \(C_out,\), got \(3,\)", (x, w, xp.zeros(3)), {}),
        (
            ValueError,
            r"b: expected shape \(4,\) \(C_out,\), got \(4, 1\)",
            (x, w, xp.zeros((4, 1))),
            {},
        ),
        (
            ValueError,
            (
                r"output size \(-1, -1\) is too small \(expected >= 1\) for input \(5, 5\), "
                r"kernel \(3, 3\), stride \(1, 1\), padding \(0, 0\), dilation \(3, 3\)"
            ),
            (x, w, b),
            {"dilation": 3},
        ),
        (ValueError, r"output size \(3, -1\) is too small", (x, xp.zeros((4, 3, 3, 7)), b), {}),
        (ValueError, r"stride: expected positive values, got \(0, 0\)", (x, w, b), {"stride": 0}),
        (
            ValueError,
            r"stride: expected positive values, got \(1, -2\)",
            (x, w, b),
            {"stride": (1, -2)},
        ),
        (
            ValueError,
            r"dilation: expected positive values, got \(0, 1\)",
            (x, w, b),
            {"dilation": (0, 1)},
        ),
        (
            ValueError,
            r"padding: expected non-negative values, got \(-1, -1\)",
            (x, w, b),
            {"padding": -1},
        ),
        (
            TypeError,
            r"stride: expected an int or a pair of ints, got 1.5",
            (x, w, b),
            {"stride": 1.5},
        ),
        (
            TypeError,
            r"padding: expected an int or a pair of ints, got \(1, 2, 3\)",
            (x, w, b),
            {"padding": (1, 2, 3)},
        ),
        (
            TypeError,
            "x: expected dtype float32 or float64, got int64",
            (xp.zeros((1, 3, 5, 5), dtype=xp.int64), w, b),
            {},
        ),
        (
            TypeError,
            "w: expected dtype float32 or float64, got int32",
            (x, xp.zeros((4, 3, 3, 3), dtype=xp.int32), b),
            {},
        ),
        (
            TypeError,
            "b: expected dtype float32 or float64, got bool",
            (x, w, xp.zeros(4, dtype=bool)),
            {},
        ),
        (
            TypeError,
            "x: expected dtype float32 or float64, got complex128",
            (x.astype(xp.complex128), w, b),
            {},
        ),
        (TypeError, "x: expected a numpy or cupy array, got list", ([[[[0.0]]]], w, b), {}),
        (
            TypeError,
            "dtypes differ: expected one float dtype, got x: float64, w: float32, b: float64",
            (x, w.astype(xp.float32), b),
            {},
        ),
        (
            TypeError,
            "dtypes differ: expected one float dtype, got x: float32, w: float32, b: float64",
            (x.astype(xp.float32), w.astype(xp.float32), b),
            {},
        ),
    ]
    for fn in (conv2d_forward, conv2d_naive):
        for err, match, args, kwargs in bad:
            with pytest.raises(err, match=match):
                fn(*args, **kwargs)


def test_backward_rejects_bad_dy(xp):
    _, cache = conv2d_forward(xp.zeros((2, 3, 5, 5)), xp.zeros((4, 3, 3, 3)), stride=2)
    with pytest.raises(
        ValueError,
        match=r"dy: expected shape \(2, 4, 2, 2\) \(N, C_out, Ho, Wo\), got \(2, 4, 3, 3\)",
    ):
        conv2d_backward(xp.zeros((2, 4, 3, 3)), cache)
    with pytest.raises(
        ValueError, match=r"dy: expected shape \(2, 4, 2, 2\) \(N, C_out, Ho, Wo\), got \(16, 2\)"
    ):
        conv2d_backward(xp.zeros((16, 2)), cache)
    with pytest.raises(
        TypeError, match="dy: expected dtype float64 \\(the dtype of x\\), got float32"
    ):
        conv2d_backward(xp.zeros((2, 4, 2, 2), dtype=xp.float32), cache)
    with pytest.raises(TypeError, match="dy: expected dtype float32 or float64, got int64"):
        conv2d_backward(xp.zeros((2, 4, 2, 2), dtype=xp.int64), cache)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 4, 2, 2\) .*got \(2, 4, 3, 3\)"):
        conv2d_naive_backward(
            xp.zeros((2, 4, 3, 3)), xp.zeros((2, 3, 5, 5)), xp.zeros((4, 3, 3, 3)), stride=2
        )


def test_rejects_mixed_backends():
    x, w = np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3, 3))
    with pytest.raises(TypeError, match="mix array libraries: expected all numpy or all cupy"):
        conv2d_forward(x, ForeignArray(w))
    with pytest.raises(TypeError, match="mix array libraries"):
        conv2d_forward(x, w, ForeignArray(np.zeros(4)))
    _, cache = conv2d_forward(x, w)
    with pytest.raises(TypeError, match="mix array libraries"):
        conv2d_backward(ForeignArray(np.zeros((1, 4, 3, 3))), cache)


@pytest.mark.skipif(not gpu_available(), reason="no usable GPU (CuPy)")
def test_rejects_mixed_numpy_and_real_cupy():
    import cupy

    with pytest.raises(TypeError, match="mix array libraries"):
        conv2d_forward(np.zeros((1, 3, 5, 5)), cupy.zeros((4, 3, 3, 3)))


@given(data=st.data())
def test_weight_grad_alone_equals_the_backward_dw(xp, data):
    """conv2d_weight_grad is the dw of conv2d_backward, computed without dx."""
    from refdlrt.ops.conv import conv2d_weight_grad

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    s, p, d = data.draw(st.integers(1, 2)), data.draw(st.integers(0, 2)), data.draw(st.integers(1, 2))
    x = xp.asarray(rng.standard_normal((2, 3, 7, 8)))
    w = xp.asarray(rng.standard_normal((4, 3, kh, kw)))
    y, cache = conv2d_forward(x, w, stride=s, padding=p, dilation=d)
    dy = xp.asarray(rng.standard_normal(y.shape))
    _, dw, _ = conv2d_backward(dy, cache)
    got = conv2d_weight_grad(x, dy, (kh, kw), stride=s, padding=p, dilation=d)
    assert_close(got, dw, np.float64, scale=10.0)  # same sums, other blocking
    _, dw_naive, _ = conv2d_naive_backward(to_numpy(dy), to_numpy(x), to_numpy(w), stride=s, padding=p, dilation=d)
    assert_close(got, dw_naive, np.float64, scale=10.0)


def test_weight_grad_rejects_bad_shapes():
    from refdlrt.ops.conv import conv2d_weight_grad

    x, dy = np.zeros((2, 3, 7, 7)), np.zeros((2, 4, 5, 5))
    with pytest.raises(ValueError, match="dy: expected a 4-d array"):
        conv2d_weight_grad(x, dy[0], 3)
    with pytest.raises(ValueError, match=r"dy"):
        conv2d_weight_grad(x, np.zeros((2, 4, 6, 5)), 3)


def test_backward_without_dx_gives_the_same_dw_db_and_no_dx(rng):
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    y, cache = conv2d_forward(x, w, b, stride=(2, 1), padding=1)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    none, dw2, db2 = conv2d_backward(dy, cache, need_dx=False)
    assert none is None and dx is not None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_backward_without_dw_gives_the_same_dx_db_no_dw_and_builds_no_patches(rng, monkeypatch):
    import refdlrt.ops.conv as conv

    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    for stride in ((2, 1), 1):  # both dx routes (col2im; transposed conv)
        y, cache = conv2d_forward(x, w, b, stride=stride, padding=1)
        dy = rng.standard_normal(y.shape)
        dx, dw, db = conv2d_backward(dy, cache)
        padded, weight_grads = [], []
        real_pad, real_dw = conv_patches._pad_nhwc_into, conv._weight_grad
        monkeypatch.setattr(conv, "_pad_nhwc_into", lambda *a: padded.append(1) or real_pad(*a))
        monkeypatch.setattr(conv, "_weight_grad", lambda *a: weight_grads.append(1) or real_dw(*a))
        dx2, none, db2 = conv2d_backward(dy, cache, need_dw=False)
        monkeypatch.undo()
        assert none is None and dw is not None
        assert not padded and not weight_grads  # x is padded (and its patches built) only for dw
        np.testing.assert_array_equal(dx2, dx)
        np.testing.assert_array_equal(db2, db)


# --- the weight gradient from the patches of dy (issue 14) ------------------------------------


@given(data=st.data())
def test_weight_grad_from_dy_patches_equals_the_loop_spec(xp, data):
    """Stride 1, fewer output than input channels: conv2d_weight_grad builds its patch matrix
    from dy (_dw_by_transposed_patches); the loop spec and the backward's dw agree."""
    from refdlrt.ops.conv_patches import _geometry
    from refdlrt.ops.conv_weight_grad import _select_dw_route, conv2d_weight_grad

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    p, d = data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2))), data.draw(st.integers(1, 2))
    c_in = data.draw(st.integers(2, 5))
    c_out = data.draw(st.integers(1, c_in - 1))
    H, W = data.draw(st.integers(3, 7)), data.draw(st.integers(3, 7))
    assume(H + 2 * p[0] > d * (kh - 1) and W + 2 * p[1] > d * (kw - 1))
    x = rng.standard_normal((2, c_in, H, W))
    w = rng.standard_normal((c_out, c_in, kh, kw))
    y, cache = conv2d_forward(xp.asarray(x), xp.asarray(w), padding=p, dilation=d)
    dy = rng.standard_normal(y.shape)
    with mock.patch.object(conv_weight_grad, "planes_route_pays", lambda *a: False):  # few planes too
        assume(_select_dw_route(_geometry(x, w, None, 1, p, d), np) == "patches of dy")  # H W C_out < Ho Wo C_in
        got = conv2d_weight_grad(xp.asarray(x), xp.asarray(dy), (kh, kw), padding=p, dilation=d)
    _, dw_naive, _ = conv2d_naive_backward(dy, x, w, padding=p, dilation=d)
    assert_close(got, dw_naive, np.float64, scale=10.0)  # other summation order than the loops
    _, dw, _ = conv2d_backward(xp.asarray(dy), cache)
    assert_close(got, dw, np.float64, scale=10.0)


def test_weight_grad_routes_by_the_smaller_patch_matrix():
    from refdlrt.ops.conv_patches import _geometry
    from refdlrt.ops.conv_weight_grad import _select_dw_route

    def route(c_in, c_out, stride=1, hw=8, padding=1):
        x, w = np.zeros((1, c_in, hw, hw)), np.zeros((c_out, c_in, 3, 3))
        return _select_dw_route(_geometry(x, w, None, stride, padding, 1), np)

    assert route(64, 16) == "patches of dy"  # H W C_out = 1024 < Ho Wo C_in = 4096
    assert route(16, 64) == "patches of x"
    assert route(16, 16) == "patches of x"  # a tie keeps the backward's route
    assert route(64, 16, stride=2) == "patches of x"  # stride 1 only
    # without padding Ho Wo = 36 < H W = 64: 64 * 15 = 960 > 36 * 16 = 576 -> patches of x
    assert route(16, 15, padding=0) == "patches of x"
    assert route(16, 8, padding=0) == "patches of dy"  # 64 * 8 = 512 < 576


def test_weight_grad_takes_channel_major_patches_of_x_for_wide_output_rows():
    """NumPy, Wo >= 28 (_CHANNEL_MAJOR_MIN_WIDTH) and C_out <= C_in kh kw, where the patches of x
    are taken; not where the patches of dy or the few-planes route are, not on CuPy (a stand-in
    module named cupy)."""
    import types

    from refdlrt.ops.conv_patches import _geometry
    from refdlrt.ops.conv_weight_grad import _CHANNEL_MAJOR_MIN_WIDTH, _select_dw_route

    def route(c_in, c_out, hw, xp=np, padding=1, kernel=3):
        x, w = np.zeros((1, c_in, hw, hw)), np.zeros((c_out, c_in, kernel, kernel))
        return _select_dw_route(_geometry(x, w, None, 1, padding, 1), xp)

    assert _CHANNEL_MAJOR_MIN_WIDTH == 28
    assert route(32, 32, 28) == route(32, 64, 32) == "channel-major patches of x"
    assert route(32, 32, 27) == route(64, 64, 14) == "patches of x"  # vgg_small's conv4
    assert route(6, 16, 32, padding=0, kernel=5) == "channel-major patches of x"  # Wo = 28
    assert route(6, 16, 31, padding=0, kernel=5) == "patches of x"  # Wo = 27
    assert route(4, 36, 32) == "channel-major patches of x"  # dy's copy (36) no larger than the patches
    assert route(4, 37, 32) == route(4, 256, 32) == "patches of x"  # C_out > C_in kh kw = 36
    assert route(64, 16, 32) == "patches of dy"
    assert route(1, 16, 32) == "planes"
    assert route(32, 32, 28, xp=types.ModuleType("cupy")) == "patches of x"


@pytest.mark.parametrize("c_out, hw, one_gemm", [(36, (8, 7), True), (37, (8, 7), False),  # K = 4 x 3 x 3 = 36
                                                 (30, (5, 5), False)])  # more channels than pixels
def test_channels_innermost_patches_copy_dy_only_where_it_is_no_larger(monkeypatch, c_out, hw, one_gemm):
    """The channels-innermost patches of x: one GEMM a block against dy's block transposed where
    C_out <= C_in kh kw and C_out <= Ho Wo, in blocks of a quarter of the budget (here 2, 2, 1
    samples); else _product_sum (dy in place per sample, or its one GEMM a block of the whole
    budget with more channels than pixels). Float32, against the loop spec (float64)."""
    from refdlrt.ops import conv as conv_mod

    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 4, *hw)).astype(np.float32)
    g = conv_patches._geometry(x, np.zeros((c_out, 4, 3, 3), np.float32), None, 1, 1, 1)
    dy = rng.standard_normal((5, c_out, *hw)).astype(np.float32)
    assert conv_weight_grad._select_dw_route(g, np) == "patches of x"
    if one_gemm:  # 8 samples' patches and dy copies: blocks of 2 at a quarter of it
        monkeypatch.setitem(conv_patches._BLOCK_BYTES, "numpy", 8 * (36 + c_out) * 8 * 7 * 4)
    sizes, per_sample = [], []
    real_t, real_p = conv_weight_grad._transposed_product_sum, conv_weight_grad._product_sum

    def spy_t(*a):
        add, total = real_t(*a)
        return (lambda dy_b, col: sizes.append(dy_b.shape[0]) or add(dy_b, col)), total

    monkeypatch.setattr(conv_weight_grad, "_transposed_product_sum", spy_t)
    monkeypatch.setattr(conv_weight_grad, "_product_sum", lambda *a: per_sample.append(1) or real_p(*a))
    got = conv_mod.conv2d_weight_grad(x, dy, 3, padding=1)
    assert sizes == ([2, 2, 1] if one_gemm else []) and bool(per_sample) is not one_gemm
    assert got.dtype == np.float32 and got.flags.c_contiguous
    _, dw, _ = conv2d_naive_backward(dy.astype(np.float64), x.astype(np.float64),
                                     np.zeros((c_out, 4, 3, 3)), padding=1)
    assert_close(got, dw, np.float32, scale=sum_bound(dy, x, terms=5 * hw[0] * hw[1]))


def test_weight_grad_from_dy_patches_keeps_float32_and_is_used(monkeypatch):
    from refdlrt.ops import conv as conv_mod

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 2, 5, 5)).astype(np.float32)
    called = []
    real = conv_weight_grad._dw_by_transposed_patches
    monkeypatch.setattr(conv_weight_grad, "_dw_by_transposed_patches",
                        lambda *a: called.append(1) or real(*a))
    got = conv_mod.conv2d_weight_grad(x, dy, 3, padding=1)
    assert called == [1] and got.dtype == np.float32 and got.flags.c_contiguous
    _, dw, _ = conv2d_naive_backward(dy.astype(np.float64), x.astype(np.float64),
                                     np.zeros((2, 6, 3, 3)), padding=1)
    assert_close(got, dw, np.float32, scale=10.0)


@pytest.mark.parametrize("c_in, c_out, planes, route", [(4, 1, True, "patches of dy"),
                                                   (1, 4, False, "patches of x"), (1, 4, True, "planes")])
def test_weight_grad_in_blocks_of_the_batch(monkeypatch, c_in, c_out, planes, route):
    """Several batch blocks accumulate into one gradient (the block budget forced small), on
    every route (planes False: the few-planes route turned off)."""
    from refdlrt.ops import conv as conv_mod

    if not planes:
        monkeypatch.setattr(conv_weight_grad, "planes_route_pays", lambda *a: False)
    g = conv._geometry(np.zeros((5, c_in, 6, 6)), np.zeros((c_out, c_in, 3, 3)), None, 1, 1, 1)
    assert conv_weight_grad._select_dw_route(g, np) == route
    rng = np.random.default_rng(4)
    x, dy = rng.standard_normal((5, c_in, 6, 6)), rng.standard_normal((5, c_out, 6, 6))
    whole = conv_mod.conv2d_weight_grad(x, dy, 3, padding=1)
    monkeypatch.setitem(conv_patches._BLOCK_BYTES, "numpy", 1)  # one sample per block
    blocks = conv_mod.conv2d_weight_grad(x, dy, 3, padding=1)
    _, dw, _ = conv2d_naive_backward(dy, x, np.zeros((c_out, c_in, 3, 3)), padding=1)
    assert_close(blocks, dw, np.float64)
    assert_close(whole, dw, np.float64)


def test_backward_without_dx_and_dw_gives_only_db(rng):
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y, cache = conv2d_forward(x, w, b, padding=1)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = conv2d_backward(dy, cache, need_dx=False, need_dw=False)
    assert dx is None and dw is None
    assert_close(db, dy.sum(axis=(0, 2, 3)), np.float64)  # a product's sum: other rounding


@pytest.mark.torch
def test_weight_grad_from_dy_patches_matches_torch(torch):
    from refdlrt.ops.conv import conv2d_weight_grad

    rng = np.random.default_rng(5)
    x, dy = rng.standard_normal((2, 7, 6, 5)), rng.standard_normal((2, 3, 6, 5))
    xt = torch.tensor(x)
    wt = torch.zeros(3, 7, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, padding=(2, 1), dilation=(2, 1)).backward(torch.tensor(dy))
    got = conv2d_weight_grad(x, dy, 3, padding=(2, 1), dilation=(2, 1))
    assert_close(got, wt.grad.numpy(), np.float64, scale=10.0)


def test_backward_dw_with_and_without_dx_when_dy_patches_are_cheaper(rng):
    """Stride 1, C_out < C_in: the kernel gradient comes from the patches of dy, with dx and
    without (the backward takes dw by conv2d_weight_grad's route): the same numbers."""
    x, w = rng.standard_normal((2, 6, 5, 5)), rng.standard_normal((2, 6, 3, 3))
    y, cache = conv2d_forward(x, w, None, padding=1)
    dy = rng.standard_normal(y.shape)
    _, dw, _ = conv2d_backward(dy, cache)
    _, dw_alone, _ = conv2d_backward(dy, cache, need_dx=False)
    _, dw_naive, _ = conv2d_naive_backward(dy, x, w, padding=1)
    assert_close(dw_alone, dw_naive, np.float64, scale=10.0)  # other summation order
    np.testing.assert_array_equal(dw, dw_alone)


@pytest.mark.parametrize("c_in, c_out, hw", [(6, 8, 2), (8, 2, 2), (8, 8, 1)])
def test_weight_grad_of_a_deep_layer_with_more_channels_than_pixels(rng, c_in, c_out, hw):
    """Few pixels, many channels (the one-GEMM-per-block branch of _product_sum), on the route
    conv2d_weight_grad picks and in the backward with dx, against the loop spec."""
    x, w = rng.standard_normal((3, c_in, hw, hw)), rng.standard_normal((c_out, c_in, 3, 3))
    y, cache = conv2d_forward(x, w, None, padding=1)
    dy = rng.standard_normal(y.shape)
    _, dw_naive, _ = conv2d_naive_backward(dy, x, w, padding=1)
    from refdlrt.ops.conv import conv2d_weight_grad

    assert_close(conv2d_weight_grad(x, dy, 3, padding=1), dw_naive, np.float64, scale=10.0)
    assert_close(conv2d_backward(dy, cache)[1], dw_naive, np.float64, scale=10.0)


def test_weight_grad_of_a_deep_layer_holds_no_per_sample_products():
    """Memory: N = 16, 128 -> 128 channels on 2 x 2 pixels. Per-sample products would hold
    N C_out kh kw C_in floats (9.4 MB); the patch matrices hold N Ho Wo kh kw C_in (0.3 MB)."""
    import tracemalloc

    from refdlrt.ops.conv import conv2d_weight_grad

    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 128, 2, 2)).astype(np.float32)
    dy = rng.standard_normal((16, 128, 2, 2)).astype(np.float32)
    per_sample = 16 * 128 * 9 * 128 * 4
    _, cache = conv2d_forward(x, np.zeros((128, 128, 3, 3), np.float32), None, padding=1)
    for f in (lambda: conv2d_weight_grad(x, dy, 3, padding=1), lambda: conv2d_backward(dy, cache)):
        tracemalloc.start()
        f()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # what is needed: a few (C_out, kh kw C_in) arrays of 0.6 MB (sum, product, dw) and
        # the small patches; per-sample products alone would be 9.4 MB
        assert peak < per_sample / 2, (peak, per_sample)


def test_dy_patches_refuse_a_stride():
    from refdlrt.ops.conv_patches import _geometry
    from refdlrt.ops.conv_weight_grad import _dw_by_transposed_patches

    x, w = np.zeros((1, 4, 6, 6)), np.zeros((2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"expected stride \(1, 1\), got \(2, 1\)"):
        _dw_by_transposed_patches(np.zeros((1, 2, 3, 6)), x, _geometry(x, w, None, (2, 1), 1, 1))


def test_weight_grad_from_dy_patches_with_a_partial_last_block(monkeypatch):
    """Blocks of 2 samples for a batch of 5 (2, 2, 1) on the patches-of-dy route, asymmetric
    dilation and padding."""
    from refdlrt.ops import conv as conv_mod

    rng = np.random.default_rng(7)
    x, dy = rng.standard_normal((5, 6, 6, 7)), rng.standard_normal((5, 2, 6, 7))
    g = conv_patches._geometry(x, np.zeros((2, 6, 3, 3)), None, 1, (2, 1), (2, 1))
    assert conv_weight_grad._select_dw_route(g, np) == "patches of dy" and g.out_size == (6, 7)
    budget = 2 * conv_patches._block_sample_bytes(g, 8)
    monkeypatch.setitem(conv_patches._BLOCK_BYTES, "numpy", budget)
    assert conv_patches._batch_blocks(g, np, 8)[1] == [(0, 2), (2, 4), (4, 5)]
    got = conv_mod.conv2d_weight_grad(x, dy, 3, padding=(2, 1), dilation=(2, 1))
    _, dw, _ = conv2d_naive_backward(dy, x, np.zeros((2, 6, 3, 3)), padding=(2, 1), dilation=(2, 1))
    assert_close(got, dw, np.float64, scale=10.0)


def test_weight_grad_from_x_patches_in_quarter_blocks_with_a_partial_last_one(monkeypatch):
    """The channel-major patches of x (output rows of 28 or more) take blocks of a quarter of the
    patch budget (_BLOCK_SHARE), by the size of their own patches and dy copy: with the
    budget at 8 samples' worth, blocks of 2, 2, 1 for a batch of 5, stride, dilation and asymmetric
    padding; float32 in, float32 out, against the loop spec (float64)."""
    from refdlrt.ops import conv as conv_mod

    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 6, 9, 30)).astype(np.float32)  # 6 x 3 x 2 = 36 > 32 rows: not "planes"
    g = conv_patches._geometry(x, np.zeros((6, 6, 3, 2), np.float32), None, (2, 1), (1, 0), (1, 2))
    dy = rng.standard_normal((5, 6, *g.out_size)).astype(np.float32)
    assert g.out_size[1] == 28 and conv_weight_grad._BLOCK_SHARE == 0.25
    assert conv_weight_grad._select_dw_route(g, np) == "channel-major patches of x"
    patches = (6 * 3 * 2 + 6) * g.out_size[0] * g.out_size[1] * 4  # (C_in kh kw + C_out) Ho Wo float32
    monkeypatch.setitem(conv_patches._BLOCK_BYTES, "numpy", 8 * patches)
    seen, real = [], conv_weight_grad._block_planes_into
    monkeypatch.setattr(conv_weight_grad, "_block_planes_into",
                        lambda colT, xpad, g: seen.append(colT.shape[3]) or real(colT, xpad, g))
    got = conv_mod.conv2d_weight_grad(x, dy, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    assert seen == [2, 2, 1] and got.dtype == np.float32 and got.flags.c_contiguous
    _, dw, _ = conv2d_naive_backward(dy.astype(np.float64), x.astype(np.float64), np.zeros((6, 6, 3, 2)),
                                     stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    assert_close(got, dw, np.float32, scale=sum_bound(dy, x, terms=5 * g.out_size[0] * g.out_size[1]))


# ----------------------------------------------------------------------------- shifted GEMMs


@pytest.mark.parametrize(
    "c_reduce, c_out, padded, out, stride, expected",
    [
        (16, 16, (34, 34), (32, 32), (1, 1), True),  # a Tucker core, 3 x 3, "same" padding
        (15, 17, (16, 16), (14, 14), (1, 1), True),
        (2, 2, (34, 34), (32, 32), (1, 1), True),  # the fewest channels taken
        (1, 1, (34, 34), (32, 32), (1, 1), False),  # one channel: outer products
        (64, 64, (34, 34), (32, 32), (1, 1), True),  # the most channels taken
        (64, 64, (16, 16), (14, 14), (1, 1), False),  # beyond 16 channels: wide grid <= 1.2x
        (17, 17, (11, 11), (10, 10), (1, 1), False),  # 121 > 1.2 x 100
        (17, 17, (12, 10), (10, 10), (1, 1), True),  # 120 = 1.2 x 100, the limit
        (17, 17, (10, 12), (10, 10), (1, 1), True),  # the same grid, other axis order
        (17, 17, (13, 11), (12, 10), (1, 1), True),  # 143 <= 1.2 x 120: not a square of a side
        (16, 16, (16, 16), (14, 14), (1, 1), True),  # 16 channels: 1.5x allowed
        (65, 64, (34, 34), (32, 32), (1, 1), False),
        (16, 20, (34, 34), (32, 32), (1, 1), True),  # c_out = 1.25 c_reduce, the limit
        (16, 21, (34, 34), (32, 32), (1, 1), False),
        (16, 16, (3, 4), (2, 4), (1, 1), True),  # wide grid 12 = 1.5 x 8, the limit
        (16, 16, (3, 5), (2, 4), (1, 1), False),  # 15 > 1.5 x 8
        (6, 6, (14, 14), (10, 10), (1, 1), False),  # LeNet's unpadded 5 x 5
        (16, 16, (34, 34), (32, 32), (2, 1), False),  # a stride
        (16, 16, (34, 34), (32, 32), (1, 2), False),
    ],
)
def test_shifted_route_rule(c_reduce, c_out, padded, out, stride, expected):
    from refdlrt.ops.conv_shifted import shifted_route_pays

    assert shifted_route_pays(c_reduce, c_out, padded, out, stride, np) is expected


def test_the_shifted_route_is_never_taken_on_cupy():
    """On a GPU im2col won at every measured shape (an H200, benchmarks/gpu_check.sh): the rule
    says no for CuPy where it says yes for NumPy (a stand-in module named cupy: no GPU needed)."""
    import types

    from refdlrt.ops.conv_shifted import shifted_route_pays

    fake_cupy = types.ModuleType("cupy")
    case = (16, 16, (34, 34), (32, 32), (1, 1))  # a small core: shifted on NumPy
    assert shifted_route_pays(*case, np)
    assert shifted_route_pays(*case, fake_cupy) is False
    with pytest.raises(TypeError):  # the library is a required argument
        shifted_route_pays(*case)
    g = conv._geometry(np.zeros((1, 16, 32, 32)), np.zeros((16, 16, 3, 3)), None, 1, 1, 1)
    assert conv._select_forward_route(g, np) is conv._forward_by_shifts
    assert conv._select_forward_route(g, fake_cupy) is conv._forward_by_im2col


def test_a_small_core_takes_the_shifted_route_forward_and_for_dx(rng):
    # 8 -> 8 channels, 3 x 3, "same" padding on 12 x 12 (wide grid 1.36x): the rule takes the shifted GEMMs in the forward
    # and in the transposed-convolution dx; the result is the loop spec's (float64)
    x, w, b = rng.standard_normal((2, 8, 12, 12)), rng.standard_normal((8, 8, 3, 3)), rng.standard_normal(8)
    dy = rng.standard_normal((2, 8, 12, 12))
    with mock.patch.object(conv, "shifted_conv", wraps=conv.shifted_conv) as spy:
        y, cache = conv2d_forward(x, w, b, padding=1)
        assert spy.call_count == 1
        flat, acc, tmp = spy.call_args[0][0], *spy.call_args[0][-2:]
        assert flat.dtype == acc.dtype == tmp.dtype == np.float64  # buffers in the input's dtype
        assert conv._select_dx_route(cache[3]) is conv._dx_by_transposed_conv
        dx, dw, db = conv2d_backward(dy, cache)
        assert spy.call_count == 2
    case = Case(x.shape, w.shape, {"stride": 1, "padding": 1, "dilation": 1}, True, None, 0)
    s = scales(case, x, w, b, dy)
    assert_close(y, conv2d_naive(x, w, b, padding=1), np.float64, scale=s[0])
    for ours, spec, sc in zip((dx, dw, db), conv2d_naive_backward(dy, x, w, b, padding=1), s[1:]):
        assert_close(ours, spec, np.float64, scale=sc)


def test_the_shifted_route_keeps_float32_buffers(rng):
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    with mock.patch.object(conv, "shifted_conv", wraps=conv.shifted_conv) as spy:
        y, cache = conv2d_forward(x, w, None, padding=1)
        conv2d_backward(y, cache)
    assert spy.call_count == 2 and y.dtype == np.float32
    for call in spy.call_args_list:
        flat, acc, tmp = call[0][0], *call[0][-2:]
        assert flat.dtype == acc.dtype == tmp.dtype == np.float32


def test_a_stride_never_takes_the_shifted_forward_even_when_forced(rng):
    # the shifted GEMMs need stride 1: the route test checks it before the cost rule
    x, w = rng.standard_normal((1, 4, 7, 7)), rng.standard_normal((4, 4, 3, 3))
    with mock.patch.object(conv, "shifted_route_pays", lambda *a: True):
        g = conv._geometry(x, w, None, 2, 1, 1)
        assert conv._select_forward_route(g, np) is conv._forward_by_im2col
        y, _ = conv2d_forward(x, w, None, stride=2, padding=1)
    assert_close(y, conv2d_naive(x, w, None, stride=2, padding=1), np.float64,
                 scale=sum_bound(x, w, terms=36))


@given(case=conv_cases())
def test_input_grad_alone_equals_the_backward_dx_and_the_loop_spec(xp, case):
    data = case.data()
    x, w, b, dy = to_xp(xp, *data)
    with fast_path(case):
        _, cache = conv2d_forward(x, w, b, **case.kwargs)
        dx = conv2d_backward(dy, cache)[0]
        alone = conv.conv2d_input_grad(dy, w, x.shape, **case.kwargs)
    assert alone.shape == x.shape and alone.dtype == x.dtype
    assert bool(xp.array_equal(alone, dx))  # the same route, the same numbers
    spec = conv2d_naive_backward(*to_xp(np, *data[3:4]), *data[:2], None, **case.kwargs)[0]
    assert_close(alone, spec, np.float64, scale=scales(case, *data)[1])


def test_input_grad_rejects_a_dy_of_the_wrong_shape_dtype_or_backend():
    w = np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"dy"):
        conv.conv2d_input_grad(np.zeros((1, 3, 4, 4)), w, (1, 2, 5, 5))
    with pytest.raises(TypeError, match=r"dy.*float32 \(the dtype of w\)"):
        conv.conv2d_input_grad(np.zeros((1, 3, 3, 3)), w.astype(np.float32), (1, 2, 5, 5))
    for bad in [(1, 2, 5), (1, 2, 5, 0), (1, 2, 5.0, 5), (1, -2, 5, 5)]:
        with pytest.raises(ValueError, match=r"x_shape: expected 4 positive ints"):
            conv.conv2d_input_grad(np.zeros((1, 3, 3, 3)), w, bad)
    with pytest.raises(ValueError, match=r"w: expected shape \(C_out, 4, kh, kw\)"):
        conv.conv2d_input_grad(np.zeros((1, 3, 3, 3)), w, (1, 4, 5, 5))
    with pytest.raises(TypeError, match="mix array libraries"):
        conv.conv2d_input_grad(ForeignArray(np.zeros((1, 3, 3, 3))), w, (1, 2, 5, 5))


def test_input_grad_keeps_float32_and_builds_no_patches_of_x(rng, monkeypatch):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y, cache = conv2d_forward(x, w, None, padding=1)
    dx = conv2d_backward(y, cache)[0]

    def boom(*a, **k):
        raise AssertionError("conv2d_input_grad built the patches of x for a kernel gradient")

    monkeypatch.setattr(conv, "_weight_grad", boom)
    alone = conv.conv2d_input_grad(y, w, x.shape, padding=1)
    assert alone.dtype == np.float32
    np.testing.assert_array_equal(alone, dx)


# ----------------------------------------------------------------------------- few input planes


@pytest.mark.parametrize("c_in, kernel, expected", [
    (1, (3, 3), True),  # vgg_small's first layer (K = 9)
    (1, (5, 5), True),  # LeNet5's (K = 25)
    (3, (3, 3), True),  # an RGB input (K = 27)
    (2, (4, 4), True),  # K = 32, the limit
    (4, (3, 3), False),  # K = 36
    (2, (5, 5), False),
    (16, (1, 1), True),  # a 1 x 1 convolution of 16 channels: 16 rows
    (33, (1, 1), False),
])
def test_planes_route_rule(c_in, kernel, expected):
    from refdlrt.ops.conv_planes import MAX_PLANE_ROWS, planes_route_pays

    assert MAX_PLANE_ROWS == 32
    g = conv._geometry(np.zeros((2, c_in, 9, 9)), np.zeros((4, c_in, *kernel)), None, 1, 1, 1)
    assert planes_route_pays(g, np) is expected
    assert (conv_weight_grad._select_dw_route(g, np) == "planes") is expected


def test_the_planes_route_is_never_taken_on_cupy():
    """CuPy keeps its one GEMM per batch (a stand-in module named cupy: no GPU needed)."""
    import types

    from refdlrt.ops.conv_planes import planes_route_pays

    g = conv._geometry(np.zeros((2, 1, 9, 9)), np.zeros((4, 1, 3, 3)), None, 1, 1, 1)
    assert planes_route_pays(g, np)
    fake_cupy = types.ModuleType("cupy")
    assert planes_route_pays(g, fake_cupy) is False
    assert conv_weight_grad._select_dw_route(g, fake_cupy) == "patches of x"
    with pytest.raises(TypeError):  # the library is a required argument
        conv_weight_grad._select_dw_route(g)


def test_a_first_layer_takes_the_planes_route_forward_and_for_its_kernel_gradient(rng):
    # one input channel, 3 x 3, "same" padding: the planes route in the forward (no NHWC block,
    # no transposing copy) and in the kernel gradient alone; the loop spec's numbers (float64)
    from refdlrt.ops import conv_planes
    from refdlrt.ops.conv import conv2d_weight_grad

    x, w, b = rng.standard_normal((3, 1, 9, 8)), rng.standard_normal((5, 1, 3, 3)), rng.standard_normal(5)
    dy = rng.standard_normal((3, 5, 9, 8))
    with mock.patch.object(conv_planes, "_planes_into", wraps=conv_planes._planes_into) as spy, \
            mock.patch.object(conv, "_select_forward_route") as nhwc:
        y, cache = conv2d_forward(x, w, b, padding=1)
        dw = conv2d_weight_grad(x, dy, 3, padding=1)
        _, dw_b, db = conv2d_backward(dy, cache, need_dx=False)
    assert spy.call_count == 3 and not nhwc.called  # one block each: forward, dw, the backward's dw
    assert y.flags.c_contiguous
    y_ref = conv2d_naive(x, w, b, padding=1)
    _, dw_ref, db_ref = conv2d_naive_backward(dy, x, w, b, padding=1)
    assert_close(y, y_ref, np.float64, scale=sum_bound(x, w, terms=9) + np.abs(b).max())
    for got in (dw, dw_b):
        assert_close(got, dw_ref, np.float64, scale=sum_bound(dy, x, terms=3 * 9 * 8))
    assert_close(db, db_ref, np.float64, scale=sum_bound(dy, terms=3 * 9 * 8))


@pytest.mark.parametrize("planes, channel_major", [(True, "auto"), (False, False), (False, True)])
@given(case=conv_cases())
def test_weight_grad_alone_matches_loop_spec_on_every_route(xp, planes, channel_major, case):
    """conv2d_weight_grad with the planes route forced on / off, and the patches of x
    channel-major / channels-innermost, against the loop spec, in blocks of one and two samples
    too (PyTorch: the float32 test below)."""
    from refdlrt.ops.conv import conv2d_weight_grad

    data = case.data()
    x, w, b, dy = to_xp(xp, *data)
    with fast_path(case, planes=planes, channel_major=channel_major):
        dw = conv2d_weight_grad(x, dy, case.w_shape[2:], **case.kwargs)
    assert dw.shape == case.w_shape and dw.dtype == np.float64
    _, ndw, _ = conv2d_naive_backward(dy, x, w, b, **case.kwargs)
    assert_close(dw, ndw, np.float64, scale=scales(case, *data)[2])


@pytest.mark.torch
@pytest.mark.parametrize("c_in, kernel, stride, padding, dilation", [
    (1, 3, 1, 1, 1), (1, 5, 1, 2, 1), (3, 3, 2, 1, 1), (2, 3, (1, 2), (0, 1), (2, 1)),
])
def test_the_planes_route_matches_torch_in_float32(torch, c_in, kernel, stride, padding, dilation):
    """The forward and the kernel gradient of a first layer, float32 at a real size (N = 16,
    28 x 28, 32 filters, several batch blocks), against torch.nn.functional.conv2d."""
    from refdlrt.ops.conv import conv2d_weight_grad

    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, c_in, 28, 28)).astype(np.float32)
    w = rng.standard_normal((32, c_in, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    with mock.patch.dict(conv_patches._BLOCK_BYTES, numpy=2**18):  # blocks of a few samples
        y, _ = conv2d_forward(x, w, b, **kw)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dw = conv2d_weight_grad(x, dy, kernel, **kw)
    xt, wt = torch.tensor(x), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b), **kw)
    yt.backward(torch.tensor(dy))
    assert y.dtype == dw.dtype == np.float32
    assert_close(y, yt.detach().numpy(), np.float32, scale=sum_bound(x, w, terms=c_in * kernel**2))
    assert_close(dw, wt.grad.numpy(), np.float32, scale=sum_bound(dy, x, terms=y.shape[0] * y.shape[2] * y.shape[3]))
