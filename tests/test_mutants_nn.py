"""Tests that kill mutmut survivors in refdlrt/nn (lowrank_layers, lowrank_projectors).

Mutants killed (mutmut 3.8.1, see tests/README.md): the argument defaults of
tucker_conv2d_forward, TuckerConv2d.__init__/from_dense, MatrixConv2d.__init__/from_dense; every
name / layout string of the messages (_check_input, _check_bias, _check_geometry, _check_dy,
tucker_conv2d_forward/backward, the from_dense and forward checks); _check_geometry 20 (padding
< 0 accepted); b, ranks, padding and dilation passed on by from_dense; projectors: the cached
z1 / dz2 reuse (_project_channels 2, 3 and the _reduced own-factor arguments), the memo size
(_remember 8) and "never hand out the memoised array" (project 35, 37).

Expectations are literal messages written from the source's f-strings, output shapes from the
convolution size formula, and counts of the contractions the docstrings promise to skip.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import refdlrt.nn.lowrank_projectors as lp
import refdlrt.nn.route_cost as rc
from refdlrt.dlrt.problems import random_tucker
from refdlrt.nn.lowrank_layers import (
    LowRankLinear,
    MatrixConv2d,
    TuckerConv2d,
    tucker_conv2d_backward,
    tucker_conv2d_forward,
)


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _raises(err, msg, fn, *args, **kwargs):
    with pytest.raises(err, match=_exact(msg)):
        fn(*args, **kwargs)


# --- defaults ---------------------------------------------------------------------------------


def test_conv_layer_defaults_are_stride_1_padding_0_dilation_1(rng):
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    x = rng.standard_normal((2, 3, 7, 6))
    # 3x3 kernel, stride 1, no padding, dilation 1: (7 - 2, 6 - 2)
    y, _ = tucker_conv2d_forward(x, Y4)
    assert y.shape == (2, 4, 5, 4)
    assert TuckerConv2d(Y4).forward(x).shape == (2, 4, 5, 4)
    assert TuckerConv2d.from_dense(Y4.to_tensor()).forward(x).shape == (2, 4, 5, 4)
    w = rng.standard_normal((4, 3, 3, 3))
    assert MatrixConv2d.from_dense(w).forward(x).shape == (2, 4, 5, 4)
    # MatrixConv2d's kernel_size defaults to 3: a (4, 27) weight is C_in = 3, 3x3
    layer = MatrixConv2d(random_tucker((4, 27), (2, 2), rng))
    assert layer.kernel_size == (3, 3) and layer.in_channels == 3
    assert layer.forward(x).shape == (2, 4, 5, 4)


def test_from_dense_passes_on_b_ranks_and_geometry(rng):
    w4, w2, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 6)), rng.standard_normal(4)
    t = TuckerConv2d.from_dense(w4, b, (2, 2, 2, 2), stride=2, padding=3, dilation=2)
    assert (t.stride, t.padding, t.dilation) == ((2, 2), (3, 3), (2, 2))
    assert t.weight.ranks == (2, 2, 2, 2) and t.params["b"] is b
    m = MatrixConv2d.from_dense(w4, b, (2, 3), stride=2, padding=3, dilation=2)
    assert (m.stride, m.padding, m.dilation) == ((2, 2), (3, 3), (2, 2))
    assert m.weight.ranks == (2, 3) and m.params["b"] is b
    b5 = rng.standard_normal(5)
    lin = LowRankLinear.from_dense(w2, b5, (2, 3))
    assert lin.weight.ranks == (2, 3) and lin.params["b"] is b5


# --- messages ---------------------------------------------------------------------------------


def test_geometry_rejects_negative_padding_and_names_each_argument(rng):
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    geo = "expected stride >= 1, dilation >= 1, padding >= 0; got stride={}, padding={}, dilation={}"
    _raises(ValueError, geo.format((1, 1), (-1, -1), (1, 1)), TuckerConv2d, Y4, padding=-1)
    _raises(ValueError, geo.format((1, 1), (0, 0), (0, 0)), TuckerConv2d, Y4, dilation=0)
    for name in ("stride", "padding", "dilation"):
        msg = f"{name}: expected an int or a pair of ints, got 1.5"
        _raises(TypeError, msg, TuckerConv2d, Y4, **{name: 1.5})


def test_matrix_conv_kernel_size_messages(rng):
    Y2 = random_tucker((4, 27), (2, 2), rng)
    _raises(TypeError, "kernel_size: expected an int or a pair of ints, got 1.5", MatrixConv2d, Y2, kernel_size=1.5)
    _raises(ValueError, "MatrixConv2d: kernel_size must be positive, got (0, 3)", MatrixConv2d, Y2, kernel_size=(0, 3))
    msg = "MatrixConv2d: weight shape (4, 10) does not fit kernel_size (3, 3): columns must be C_in * 9"
    _raises(ValueError, msg, MatrixConv2d, random_tucker((4, 10), (2, 2), rng), kernel_size=3)


def test_from_dense_messages():
    for cls, layout, ndim in (
        (TuckerConv2d, "C_out, C_in, kh, kw", 4),
        (MatrixConv2d, "C_out, C_in, kh, kw", 4),
        (LowRankLinear, "out, in", 2),
    ):
        who = f"{cls.__name__}.from_dense: w"
        _raises(TypeError, f"{who}: expected dtype float32 or float64, got int64", cls.from_dense,
                np.zeros((2,) * ndim, dtype=np.int64))
        _raises(ValueError, f"{who}: expected a {ndim}-d array ({layout}), got shape (2, 2, 2)",
                cls.from_dense, np.zeros((2, 2, 2)))


def test_forward_input_and_bias_messages(rng):
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    Y2 = random_tucker((4, 27), (2, 2), rng)
    lin = LowRankLinear(random_tucker((4, 6), (2, 2), rng))
    tc = "tucker_conv2d_forward"
    x4, x3 = np.zeros((1, 3, 5, 5)), np.zeros((3, 5, 5))
    cases = [
        (tucker_conv2d_forward, (x3, Y4), ValueError,
         f"{tc}: x: expected a 4-d array (N, C_in, H, W), got shape (3, 5, 5)"),
        (tucker_conv2d_forward, (x4.astype(int), Y4), TypeError,
         f"{tc}: x: expected dtype float32 or float64, got int64"),
        (tucker_conv2d_forward, (x4, Y4, np.zeros(3)), ValueError,
         f"{tc}: b: expected shape (4,) (one per output), got (3,)"),
        (tucker_conv2d_forward, (x4, Y4, np.zeros(4, dtype=int)), TypeError,
         f"{tc}: b: expected dtype float32 or float64, got int64"),
        (tucker_conv2d_forward, (x4, Y4.to_tensor()), TypeError,
         f"{tc}: Y: expected an order-4 Tucker tensor, got ndarray"),
        (tucker_conv2d_forward, (x4, Y2), TypeError,
         f"{tc}: Y: expected an order-4 Tucker tensor, got Tucker of order 2"),
        (TuckerConv2d(Y4).forward, (x3,), ValueError,
         f"{tc}: x: expected a 4-d array (N, C_in, H, W), got shape (3, 5, 5)"),
        (MatrixConv2d(Y2).forward, (x3,), ValueError,
         "MatrixConv2d: x: expected a 4-d array (N, C_in, H, W), got shape (3, 5, 5)"),
        (MatrixConv2d(Y2).forward, (x4.astype(int),), TypeError,
         "MatrixConv2d: x: expected dtype float32 or float64, got int64"),
        (lin.forward, (np.zeros((2, 6, 1)),), ValueError,
         "LowRankLinear: x: expected a 2-d array (N, in), got shape (2, 6, 1)"),
        (lin.forward, (np.zeros((2, 6), dtype=int),), TypeError,
         "LowRankLinear: x: expected dtype float32 or float64, got int64"),
        (TuckerConv2d, (Y4, np.zeros(4, dtype=int)), TypeError,
         "TuckerConv2d: b: expected dtype float32 or float64, got int64"),
        (LowRankLinear, (random_tucker((4, 6), (2, 2), rng), np.zeros(3)), ValueError,
         "LowRankLinear: b: expected shape (4,) (one per output), got (3,)"),
    ]
    for fn, args, err, msg in cases:
        _raises(err, msg, fn, *args)


def test_backward_dy_messages(rng):
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    x = rng.standard_normal((1, 3, 5, 5))
    _, cache = tucker_conv2d_forward(x, Y4)
    tb = "tucker_conv2d_backward: dy"
    _raises(ValueError, f"{tb}: expected shape (1, 4, 3, 3) (the output's), got (1, 4, 3, 2)",
            tucker_conv2d_backward, np.zeros((1, 4, 3, 2)), cache)
    _raises(TypeError, f"{tb}: expected dtype float64, got float32",
            tucker_conv2d_backward, np.zeros((1, 4, 3, 3), dtype=np.float32), cache)
    lin = LowRankLinear(random_tucker((4, 6), (2, 2), rng))
    lin.forward(rng.standard_normal((2, 6)))
    _raises(ValueError, "LowRankLinear: dy: expected shape (2, 4) (the output's), got (2, 3)",
            lin.backward, np.zeros((2, 3)))
    _raises(TypeError, "LowRankLinear: dy: expected dtype float64, got float32",
            lin.backward, np.zeros((2, 4), dtype=np.float32))
    _raises(TypeError, "LowRankLinear: dy: expected dtype float32 or float64, got int64",
            lin.backward, np.zeros((2, 4), dtype=np.int64))


# --- projectors: cache reuse, memo size, copies -------------------------------------------------


def _count(monkeypatch, name):
    calls = []
    real = getattr(lp, name)

    def counted(*a, **k):
        calls.append(name)
        return real(*a, **k)

    monkeypatch.setattr(lp, name, counted)
    return calls


def _orth(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def _plain_tucker_layer(rng):
    """A (4, 3, 3, 3) Tucker conv at ranks 2 on the plain projection route (the route these
    tests are about), after one forward and backward."""
    layer = TuckerConv2d(random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng), padding=1)
    layer.projection_route = "plain"
    layer.forward(rng.standard_normal((2, 3, 5, 5)))
    layer.backward(rng.standard_normal((2, 4, 5, 5)))
    return layer


def test_tucker_projector_reuses_z1_and_dz2_for_the_layer_factors(rng, monkeypatch):
    layer = _plain_tucker_layer(rng)
    P = layer.projector()
    U0, U1 = layer.weight.factors[:2]
    calls = _count(monkeypatch, "channel_matmul")
    P.project([U0.copy(), _orth(rng, 3, 2), None, None])  # dz2 reused: one channel contraction (x)
    assert len(calls) == 1
    P.project([_orth(rng, 4, 2), U1.copy(), None, None])  # z1 reused: one (dy)
    assert len(calls) == 2


def test_matrix_conv_projector_reuses_z1_and_dz2(rng, monkeypatch):
    layer = MatrixConv2d(random_tucker((4, 27), (2, 2), rng), kernel_size=3, padding=1)
    layer.forward(rng.standard_normal((2, 3, 5, 5)))
    layer.backward(rng.standard_normal((2, 4, 5, 5)))
    P = layer.projector()
    U0, U1 = layer.weight.factors
    cm, cf = _count(monkeypatch, "channel_matmul"), _count(monkeypatch, "conv2d_forward")
    P.project([U0.copy(), U1.copy()])  # both cached: no contraction with x or dy
    assert (len(cm), len(cf)) == (0, 0)
    P.project([_orth(rng, 4, 2), U1.copy()])
    assert (len(cm), len(cf)) == (1, 0)


class _CountingArray(np.ndarray):
    """An ndarray that counts the matmuls it is the left operand of."""

    matmuls = 0

    def __matmul__(self, other):
        type(self).matmuls += 1
        return np.asarray(self) @ np.asarray(other)


def test_linear_projector_reuses_z1_and_dz2(rng):
    layer = LowRankLinear(random_tucker((4, 6), (2, 2), rng))
    x = rng.standard_normal((3, 6)).view(_CountingArray)
    dy = rng.standard_normal((3, 4)).view(_CountingArray)
    layer.forward(x)
    layer.backward(dy)
    P = layer.projector()
    U0, U1 = layer.weight.factors
    _CountingArray.matmuls = 0
    P.project([U0.copy(), _orth(rng, 6, 2)])  # x @ A1 only (dz2 = dy U0 reused)
    assert _CountingArray.matmuls == 1
    P.project([_orth(rng, 4, 2), U1.copy()])  # dy @ A0 only (z1 = x U1 reused)
    assert _CountingArray.matmuls == 2


def test_projector_memoises_exactly_its_last_four_reduced_gradients(rng, monkeypatch):
    layer = _plain_tucker_layer(rng)
    P = layer.projector()
    calls = _count(monkeypatch, "_conv2d_weight_grad")
    A = [_orth(rng, 4, 2) for _ in range(5)]
    for a in A:
        P.project([a, None, None, None])
    assert len(calls) == 5
    for a in A[1:]:  # the last four: memoised
        P.project([a, None, None, None])
    assert len(calls) == 5
    P.project([A[0], None, None, None])  # pushed out by the four after it (memo size 4)
    assert len(calls) == 6


@pytest.mark.parametrize("kind", ["tucker", "linear"])
def test_project_never_returns_the_memoised_array(rng, kind):
    if kind == "tucker":
        layer = _plain_tucker_layer(rng)
        mats = list(layer.weight.factors[:2]) + [None, None]
    else:
        layer = LowRankLinear(random_tucker((4, 6), (2, 2), rng))
        layer.forward(rng.standard_normal((3, 6)))
        layer.backward(rng.standard_normal((3, 4)))
        mats = list(layer.weight.factors)
    P = layer.projector()
    first = P.project(mats)
    keep = first.copy()
    first[...] = 0.0  # a caller writing into its result
    np.testing.assert_array_equal(P.project(mats), keep)


# --- the Tucker projector's routes (issue 14) ---------------------------------------------------


def _tucker_projector(rng, shape=(6, 5, 3, 3), ranks=(2, 3, 2, 2), **kw):
    """A TuckerConvProjector built directly from a layer's forward and backward."""
    layer = TuckerConv2d(random_tucker(shape, ranks, rng), padding=1)
    layer.dense_kernel = False  # the Tucker forward: its cache holds z1
    x = rng.standard_normal((2, shape[1], 5, 5))
    dy = rng.standard_normal(layer.forward(x).shape)
    layer.projection_route = "plain"
    layer.backward(dy)
    c = layer._cached()
    U0, U1 = layer.weight.factors[:2]
    args = (x, c.z1, dy, lp.channel_matmul(U0.T, dy), layer.weight.factors, c.geometry)
    return lp.TuckerConvProjector(*args, **kw), layer


def test_cost_model_values(rng, monkeypatch):
    """cost(route) = sum of kh kw b (a + C) over the route's kernel gradients (a, b the output and
    input channels; C = _COPY_COST; a gradient with no channel costs 0); the S-step at
    r̂_i = min(2 r_i, n_i), i.e. m_i = r̂_i - r_i new directions. "plain" prices its K-steps'
    two core-sized convolutions as kernel gradients for r0 x r1 channels and adds the 1 x 1
    products (n_i r_i, then n_i r̂_i for the S-step's channel projections) and four passes
    over x and dy (2 (n0 + n1) P, P = _PASS_COST)."""
    monkeypatch.setattr(rc, "_COPY_COST", 7)
    monkeypatch.setattr(rc, "_PASS_COST", 11)
    P, _ = _tucker_projector(rng, shape=(10, 8, 3, 2), ranks=(3, 5, 3, 2))

    def g(a, b):
        return 3 * 2 * b * (a + 7)

    m0, m1 = 3, 3  # min(6, 10) - 3, min(10, 8) - 5
    assert P.cost("dense") == g(10, 8)
    assert P.cost("blocks") == g(10, 5) + g(3, 8) + g(m0, m1)
    assert P.cost("plain") == (2 * g(3, 5) + 10 * 3 + 8 * 5 + g(m0 + 3, m1 + 5) + 10 * 6 + 8 * 8
                               + 2 * (10 + 8) * 11)
    full, _ = _tucker_projector(rng, shape=(10, 8, 3, 2), ranks=(10, 5, 3, 2))  # r0 = n0: m0 = 0
    assert full.cost("blocks") == g(10, 5) + g(10, 8)  # the new-direction gradient costs 0
    # with the K-form's convolutions handed over, plain drops its two core-sized ones, and only it
    for route in ("dense", "blocks"):
        assert rc.projection_cost(route, (10, 8, 3, 2), 3, 5, k_form=True) == P.cost(route)
    assert rc.projection_cost("plain", (10, 8, 3, 2), 3, 5, k_form=True) == P.cost("plain") - 2 * g(3, 5)
    assert rc.projection_cost("plain", (10, 8, 3, 2), 3, 5) == P.cost("plain")  # default: convolving


def test_cost_model_and_k_kernel_refuse_unknown_routes_and_modes(rng):
    _raises(ValueError, "projection_cost: route: expected 'dense', 'plain' or 'blocks', got 'auto'",
            rc.projection_cost, "auto", (4, 4, 3, 3), 2, 2)
    U = np.eye(3)
    _raises(ValueError, "k_kernel: expected mode i = 0 or 1, got 2", lp.k_kernel, 2, np.eye(4), (2, 2, 3, 3), U, U)


def test_projector_refuses_k_parts_of_other_modes(rng):
    P, _ = _tucker_projector(rng)
    args = (P.x, P.z1, P.dy, P.dz2, (P.U0, P.U1, P.U2, P.U3), P.geometry)
    _raises(ValueError, "TuckerConvProjector: k_parts: expected modes 0 and 1, got [0, 2]",
            lp.TuckerConvProjector, *args, k_parts={0: (None, None), 2: (None, None)})


def test_auto_takes_dense_on_a_tie_and_blocks_only_when_cheapest(rng, monkeypatch):
    # (16, 16) at r = 4, m = 4: dense 16 (16 + C) = blocks 4 (16 + C) + 16 (4 + C) + 4 (4 + C) at C = 14
    monkeypatch.setattr(rc, "_COPY_COST", 14)
    P, _ = _tucker_projector(rng, shape=(16, 16, 3, 3), ranks=(4, 4, 3, 3))
    assert P.cost("dense") == P.cost("blocks")
    # ties go to the first of dense, plain, blocks
    for costs, want in (({"dense": 1, "plain": 1, "blocks": 1}, "dense"),
                        ({"dense": 2, "plain": 1, "blocks": 1}, "plain"),
                        ({"dense": 1, "plain": 2, "blocks": 1}, "dense")):
        with monkeypatch.context() as m:
            m.setattr(rc, "projection_cost", lambda route, *a, c=costs, **k: c[route])
            assert _tucker_projector(rng)[0].route == want, costs
    # blocks < dense < plain (2052 < 2304 < 2520 at C = 0, no pass cost): only a comparison
    # with the blocks cost picks blocks
    monkeypatch.setattr(rc, "_COPY_COST", 0)
    monkeypatch.setattr(rc, "_PASS_COST", 0)
    P, _ = _tucker_projector(rng, shape=(16, 16, 3, 3), ranks=(6, 6, 3, 3))
    assert P.cost("blocks") < P.cost("dense") < P.cost("plain") and P.route == "blocks"
    # the run.py layer (64 -> 64) at C = 256, P = 128: r = 16 dense, 184320 < 200192 (plain)
    # < 241920 (blocks); r = 8 plain, 113024 < 184320 < 194112
    monkeypatch.setattr(rc, "_COPY_COST", 256)
    monkeypatch.setattr(rc, "_PASS_COST", 128)
    P, _ = _tucker_projector(rng, shape=(64, 64, 3, 3), ranks=(16, 16, 3, 3))
    assert (P.cost("plain"), P.cost("dense"), P.cost("blocks")) == (200192, 184320, 241920)
    assert P.route == "dense"
    # ... and plain with the K-form's K-steps free: 200192 - 2 * 9 * 16 (16 + 256) = 121856
    assert rc.projection_cost("plain", (64, 64, 3, 3), 16, 16, k_form=True) == 121856
    assert rc.cheapest_route((64, 64, 3, 3), 16, 16, k_form=True) == "plain"
    P, _ = _tucker_projector(rng, shape=(64, 64, 3, 3), ranks=(8, 8, 3, 3))
    assert (P.cost("plain"), P.cost("dense"), P.cost("blocks")) == (113024, 184320, 194112)
    assert P.route == "plain"


def test_default_route_is_auto_and_a_memoised_own_reduced_gradient_is_reused(rng, monkeypatch):
    P, layer = _tucker_projector(rng)
    assert P.route in ("plain", "blocks", "dense")
    calls = _count(monkeypatch, "_conv2d_weight_grad")
    dK = np.full((2, 3, 3, 3), 7.0)
    P2, _ = _tucker_projector(rng, route="plain")
    U0, U1 = P2.U0, P2.U1
    P2._remember(U0, U1, dK)  # reduced(U0, U1), as the first K-step of a spatial mode leaves it
    np.testing.assert_array_equal(P2.project([U0, U1, None, None]), dK)
    assert calls == []


def test_blocks_route_with_only_one_k_step_memoised_falls_back_to_plain(rng):
    P, layer = _tucker_projector(rng, route="blocks")
    U = layer.weight.factors
    P.project([None, U[1], None, None])  # only G x_1 U_1^T is memoised
    A0, A1 = _orth(rng, 6, 4), _orth(rng, 5, 4)
    want = layer.dense_gradient()
    want = np.einsum("abkl,ai,bj->ijkl", want, A0, A1)
    np.testing.assert_allclose(P.project([A0, A1, None, None]), want, rtol=0, atol=1e-12)


def test_split_new_directions_edge_cases_and_its_cut():
    """Empty and zero A (no warnings, no direction); the cut max(n, a) eps max_j ||A[:, j]||,
    checked exactly: U = e1, e2 and A's only new direction s t e3 (s a power of two, so every
    product is exact), the largest column norm s sqrt(2), the largest row norm s sqrt(3)."""
    import warnings

    U = np.eye(8)[:, :2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        B, N, S = lp.split_new_directions(np.zeros((8, 0)), U)
        assert N.shape == (8, 0) and S.shape == (0, 0) and B.shape == (2, 0)
        B, N, S = lp.split_new_directions(np.zeros((8, 3)), U)
        assert N.shape == (8, 0) and S.shape == (0, 3)
    eps, s = np.finfo(np.float64).eps, 2.0**20
    e = np.eye(8)

    def A(t):
        return s * np.stack([e[0] + e[1], e[1] + t * e[2], e[0] - e[1]], axis=1)

    cut = 8 * eps * np.sqrt(2)  # relative to s: 11.3 eps
    assert lp.split_new_directions(A(8 * eps), U)[1].shape[1] == 0  # 8 eps < cut: rounding noise
    assert lp.split_new_directions(A(12.5 * eps), U)[1].shape[1] == 1  # between the cut and 8 sqrt(3) eps
    assert 8 * eps < cut < 12.5 * eps < 8 * np.sqrt(3) * eps
