"""Tests that kill mutmut survivors in refdlrt/ops/conv.py.

Mutants killed (mutmut 3.8.1 names ``refdlrt.ops.conv.x_<function>__mutmut_<n>``, see
tests/README.md): _select_dx_route 2-10; conv2d_weight_grad 1-3, 6, 9-15, 18-20, 22, 28, 36-38,
41, 43, 74; _backward 19, 31, 33, 36, 38, 41, 43, 51, 53; _dx_by_col2im 19, 21, 26, 28;
_dx_by_transposed_conv 64, 66, 69, 71, 74, 76; _batch_blocks 10; conv_output_size 1-3; _geometry 70,
75, 90, 93, 94; conv2d_forward 39, 41, 44, 46, 49, 51.

Expectations come from the docstrings (the dx route rule of `_select_dx_route`, the block
budget of `_batch_blocks`, "dx None / no dx work" of `need_dx`, the argument names in the
messages) and from dense sums written here with np.einsum on an explicitly padded input.
"""

from __future__ import annotations

import contextlib
import re
import types
from unittest import mock

import numpy as np
import pytest
from helpers import ForeignArray

from refdlrt.ops import conv, conv_patches, conv_weight_grad
from refdlrt.ops.conv import conv2d_backward, conv2d_forward, conv2d_weight_grad

TOL64 = 1e-12  # float64 sums of at most a few hundred products of O(1) numbers


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _dense_dw(x, dy, kh, kw, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """dw[o, c, i, j] = sum_{n, oh, ow} dy[n, o, oh, ow] xpad[n, c, sh oh + dh i, sw ow + dw j]."""
    (sh, sw), (ph, pw), (dh, dw_) = stride, padding, dilation
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = dy.shape[2:]
    out = np.zeros((dy.shape[1], x.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            win = xpad[:, :, dh * i : dh * i + sh * (Ho - 1) + 1 : sh, dw_ * j : dw_ * j + sw * (Wo - 1) + 1 : sw]
            out[:, :, i, j] = np.einsum("nopq,ncpq->oc", dy, win)
    return out


def _geom(x_shape, w_shape, stride=1, padding=0, dilation=1):
    return conv._geometry(np.empty(x_shape), np.empty(w_shape), None, stride, padding, dilation)


# --- _select_dx_route: the documented rule -------------------------------------------------


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, expected",
    [
        # stride 1, H W C_out = 5*5*2 = 50 <= Ho Wo C_in = 5*5*3 = 75: transposed
        ((1, 3, 5, 5), (2, 3, 3, 3), 1, 1, "transposed"),
        # stride 1, equal copies 5*5*3 = 5*5*3: "not the larger one", transposed
        ((1, 3, 5, 5), (3, 3, 3, 3), 1, 1, "transposed"),
        # stride 1, H W C_out = 6*4*3 = 72 > Ho Wo C_in = 4*2*3 = 24 (H != W): col2im
        ((1, 3, 6, 4), (3, 3, 3, 3), 1, 0, "col2im"),
        # stride 1, 5*5*4 = 100 > 5*5*3 = 75, but 5*5/4 < 75: col2im
        ((1, 3, 5, 5), (4, 3, 3, 3), 1, 1, "col2im"),
        # stride 1, 4*4*4 = 64 > Ho Wo C_in = 2*2*3 = 12, and 2/2*3 = 3 < 64: col2im
        ((1, 3, 4, 4), (4, 3, 3, 3), 1, 0, "col2im"),
        # a stride other than (1, 1), even where the transposed copy is the smaller: col2im
        ((1, 3, 5, 5), (2, 3, 3, 3), (2, 1), 1, "col2im"),
        ((1, 3, 5, 5), (2, 3, 3, 3), (1, 2), 1, "col2im"),
        ((1, 3, 5, 5), (2, 3, 3, 3), 2, 1, "col2im"),
    ],
)
def test_dx_route_rule_of_the_docstring(x_shape, w_shape, stride, padding, expected):
    g = _geom(x_shape, w_shape, stride, padding)
    route = conv._select_dx_route(g)
    assert route is {"transposed": conv._dx_by_transposed_conv, "col2im": conv._dx_by_col2im}[expected]


# --- _batch_blocks: blocks fit the budget ----------------------------------------------------


def test_batch_blocks_hold_as_many_samples_as_the_budget_allows():
    # x (3, 2, 5, 5), w (4, 2, 3, 3), stride 1: Ho = Wo = 3; per sample the larger patch matrix
    # is kh kw max(Ho Wo C_in, H W C_out) = 9 * max(18, 100) = 900 numbers = 7200 bytes (float64)
    g = _geom((3, 2, 5, 5), (4, 2, 3, 3))
    for budget, nb, blocks in [
        (7200, 1, [(0, 1), (1, 2), (2, 3)]),  # exactly one sample
        (7199, 1, [(0, 1), (1, 2), (2, 3)]),  # less than one: still one sample per block
        (2 * 7200 + 100, 2, [(0, 2), (2, 3)]),
        (10**9, 3, [(0, 3)]),  # never more than the batch
    ]:
        with mock.patch.dict(conv_patches._BLOCK_BYTES, numpy=budget):
            assert conv._batch_blocks(g, np, 8) == (nb, blocks), budget


# --- need_dx=False does no dx work --------------------------------------------------------------


def _no_dx_routes():
    boom = mock.Mock(side_effect=AssertionError("a dx route was built without need_dx"))
    return mock.patch.multiple(conv, _dx_by_col2im=boom, _dx_by_transposed_conv=boom)


def test_backward_without_dx_builds_no_dx_route(rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3))
    y, cache = conv2d_forward(x, w, padding=1)
    dy = rng.standard_normal(y.shape)
    with _no_dx_routes():
        dx, dw, db = conv2d_backward(dy, cache, need_dx=False)
    assert dx is None and db is None
    np.testing.assert_allclose(dw, _dense_dw(x, dy, 3, 3, padding=(1, 1)), rtol=TOL64, atol=TOL64)


def test_weight_grad_builds_no_dx_route(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    dy = rng.standard_normal((2, 4, 3, 5))  # kernel (2, 3), stride (2, 1), padding (0, 1)
    with _no_dx_routes():
        got = conv2d_weight_grad(x, dy, (2, 3), stride=(2, 1), padding=(0, 1))
    np.testing.assert_allclose(
        got, _dense_dw(x, dy, 2, 3, stride=(2, 1), padding=(0, 1)), rtol=TOL64, atol=TOL64
    )


# --- conv2d_weight_grad: defaults, float32, messages ---------------------------------------------


def test_weight_grad_defaults_are_stride_1_padding_0_dilation_1(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    dy = rng.standard_normal((2, 4, 4, 3))  # 3x3 kernel, stride 1, no padding, no dilation
    got = conv2d_weight_grad(x, dy, 3)
    np.testing.assert_allclose(got, _dense_dw(x, dy, 3, 3), rtol=TOL64, atol=TOL64)


def test_weight_grad_float32(rng):
    x = rng.standard_normal((2, 3, 6, 5))
    dy = rng.standard_normal((2, 4, 4, 3))
    got = conv2d_weight_grad(x.astype(np.float32), dy.astype(np.float32), 3)
    assert got.dtype == np.float32
    # sums of 2*4*3 = 24 products of O(1) float32 numbers: a few float32 ulps of the sum
    np.testing.assert_allclose(got, _dense_dw(x, dy, 3, 3), rtol=1e-5, atol=1e-5)


def test_weight_grad_messages_name_its_own_arguments():
    x, dy = np.zeros((2, 3, 7, 7)), np.zeros((2, 4, 5, 5))
    cases = [
        ((x[0], dy, 3), ValueError, "x: expected a 4-d array (N, C_in, H, W), got shape (3, 7, 7)"),
        (
            (x, dy[0], 3),
            ValueError,
            "dy: expected a 4-d array (N, C_out, H_out, W_out), got shape (4, 5, 5)",
        ),
        ((x.astype(int), dy, 3), TypeError, "x: expected dtype float32 or float64, got int64"),
        ((x, dy.astype(int), 3), TypeError, "dy: expected dtype float32 or float64, got int64"),
        (([0.0], dy, 3), TypeError, "x: expected a numpy or cupy array, got list"),
        ((x, dy, 1.5), TypeError, "kernel_size: expected an int or a pair of ints, got 1.5"),
        (
            (x, ForeignArray(dy), 3),
            TypeError,
            "arrays mix array libraries: expected all numpy or all cupy, "
            "got [numpy.ndarray, cupy.ForeignArray]",  # the arguments in call order: x, dy
        ),
    ]
    for args, err, msg in cases:
        with pytest.raises(err, match=_exact(msg)):
            conv2d_weight_grad(*args)


# --- a float32 convolution allocates no float64 array ---------------------------------------------


@contextlib.contextmanager
def _xp_spied(spy):
    """``get_xp`` returns ``spy`` in every module of the convolution."""
    with contextlib.ExitStack() as stack:
        for mod in (conv, conv_patches, conv_weight_grad):
            stack.enter_context(mock.patch.object(mod, "get_xp", lambda *a: spy))
        yield


class _DtypeSpy(types.ModuleType):
    """NumPy, with every array returned by an ``xp.`` call recorded (dtype) for the test."""

    def __init__(self):
        super().__init__("numpy")
        self.dtypes = []

    def __getattr__(self, name):
        f = getattr(np, name)
        if not callable(f) or isinstance(f, type):
            return f

        def wrapped(*a, **k):
            r = f(*a, **k)
            if isinstance(r, np.ndarray):
                self.dtypes.append((name, r.dtype))
            return r

        return wrapped


@pytest.mark.parametrize(
    "w_shape, stride, padding, route",
    [
        ((2, 3, 3, 3), 1, 1, "transposed"),  # H W C_out <= Ho Wo C_in, stride 1
        ((4, 3, 3, 3), 2, 1, "col2im"),
    ],
)
def test_float32_runs_allocate_only_float32(rng, w_shape, stride, padding, route):
    """Buffers and GEMMs of a float32 convolution stay float32 (half the memory and traffic of
    float64, and a float32 GEMM): every array the module makes through ``xp`` is float32."""
    x = rng.standard_normal((3, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    routes = {"transposed": conv._dx_by_transposed_conv, "col2im": conv._dx_by_col2im}
    assert conv._select_dx_route(conv._geometry(x, w, b, stride, padding, 1)) is routes[route]
    spy = _DtypeSpy()
    # one sample per block, so the buffers are reused over several blocks
    with _xp_spied(spy), mock.patch.dict(conv_patches._BLOCK_BYTES, numpy=1):
        y, cache = conv2d_forward(x, w, b, stride=stride, padding=padding)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dy, cache)
        _, dw2, _ = conv2d_backward(dy, cache, need_dx=False)
        dw3 = conv2d_weight_grad(x, dy, w_shape[2:], stride=stride, padding=padding)
    assert spy.dtypes, "the spy saw no xp call"
    wrong = sorted({name for name, dt in spy.dtypes if dt != np.float32})
    assert not wrong, f"non-float32 arrays from xp.{wrong}"
    for a in (y, dx, dw, db, dw2, dw3):
        assert a.dtype == np.float32


# --- conv_output_size defaults, kernel and dilation messages of the forward -------------------------


def test_conv_output_size_defaults_are_stride_1_padding_0_dilation_1():
    # floor((7 + 0 - 1 (3 - 1) - 1) / 1) + 1 = 5
    assert conv.conv_output_size(7, 3) == 5
    assert conv.conv_output_size(7, 3, 2) == 3  # floor(4 / 2) + 1


@pytest.mark.parametrize("kernel", [(0, 3), (3, 0)])
def test_forward_rejects_an_empty_kernel_in_either_direction(kernel):
    x, w = np.zeros((1, 3, 5, 5)), np.zeros((4, 3, *kernel))
    msg = f"w: expected a kernel of size >= 1, got {kernel}"
    with pytest.raises(ValueError, match=_exact(msg)):
        conv2d_forward(x, w)


def test_forward_dilation_message_names_dilation():
    x, w = np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3, 3))
    with pytest.raises(TypeError, match=_exact("dilation: expected an int or a pair of ints, got 1.5")):
        conv2d_forward(x, w, dilation=1.5)


@pytest.mark.parametrize("c_out", [8, 2])  # patches of x; patches of dy (H W C_out < Ho Wo C_in)
def test_float32_deep_layers_allocate_only_float32(rng, c_out):
    """The one-GEMM-per-block branch of _product_sum (more channels than pixels) stays float32
    too, on both kernel-gradient routes and in the backward with dx."""
    x = rng.standard_normal((3, 8, 2, 2)).astype(np.float32)
    w = rng.standard_normal((c_out, 8, 3, 3)).astype(np.float32)
    g = conv._geometry(x, w, None, 1, 1, 1)
    assert conv_weight_grad._select_dw_route(g, np) == ("patches of x" if c_out == 8 else "patches of dy")
    spy = _DtypeSpy()
    with _xp_spied(spy), mock.patch.dict(conv_patches._BLOCK_BYTES, numpy=1):
        y, cache = conv2d_forward(x, w, None, padding=1)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        _, dw, _ = conv2d_backward(dy, cache)
        dw2 = conv2d_weight_grad(x, dy, 3, padding=1)
    wrong = sorted({name for name, dt in spy.dtypes if dt != np.float32})
    assert spy.dtypes and not wrong, f"non-float32 arrays from xp.{wrong}"
    assert dw.dtype == dw2.dtype == np.float32
