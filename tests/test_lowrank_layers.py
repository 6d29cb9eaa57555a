"""Tests of the low-rank layers (TuckerConv2d, LowRankLinear, MatrixConv2d) and their projectors.

Oracles: the dense pure functions (conv2d_forward / conv2d_backward, linear_forward /
linear_backward) applied to the reconstructed weight; the dense projector
DenseGradient(G).project (multi_mode_product of the dense G); the adjoint test with central
differences in float64; PyTorch autograd of a Tucker-parametrised convolution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import compatible, conv_geometries

import refdlrt.nn.lowrank_projectors as lp
import refdlrt.nn.route_cost as rc
from refdlrt.backend import to_numpy
from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.problems import random_tucker
from refdlrt.dlrt.projector import DenseGradient
from refdlrt.gradcheck import adjoint_test
from refdlrt.nn.lowrank_layers import LowRankLinear, MatrixConv2d, TuckerConv2d
from refdlrt.nn.tucker_k_form import KFormCache
from refdlrt.ops.conv import conv2d_backward, conv2d_forward
from refdlrt.ops.linear import linear_backward, linear_forward
from refdlrt.tensor.linalg import qr_signfixed
from refdlrt.tensor.tucker import Tucker, unfold
from refdlrt.tolerances import assert_close, tolerance

# ---------------------------------------------------------------------------- cases


@st.composite
def tucker_conv_cases(draw, need_compatible=False):
    """(geometry, ranks, bias?, seed): configuration first, data from the seed later."""
    g = draw(conv_geometries())
    shape = (g["c_out"], g["c_in"]) + g["k"]
    ranks = tuple(draw(st.integers(1, n)) for n in shape)
    if need_compatible and not compatible(ranks):
        ranks = (1, 1, 1, 1)
    return g, ranks, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@st.composite
def matrix_conv_cases(draw):
    g = draw(conv_geometries())
    shape = (g["c_out"], g["c_in"] * g["k"][0] * g["k"][1])
    ranks = tuple(draw(st.integers(1, n)) for n in shape)
    return g, ranks, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@st.composite
def linear_cases(draw):
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    ranks = tuple(draw(st.integers(1, n)) for n in shape)
    return (
        {"N": draw(st.integers(1, 4)), "shape": shape},
        ranks,
        draw(st.booleans()),
        draw(st.integers(0, 2**32 - 1)),
    )


def _bias(rng, n, with_bias):
    # offset 5 so that a bias added twice (or not at all) is far outside any tolerance
    return 5.0 + rng.standard_normal(n) if with_bias else None


def make_layer(kind, case, xp):
    """Layer, input x and output gradient dy (float64, on xp) for a drawn case."""
    g, ranks, with_bias, seed = case
    rng = np.random.default_rng(seed)
    if kind == "linear":
        shape = g["shape"]
        Y = random_tucker(shape, ranks, rng, xp=xp)
        b = _bias(rng, shape[0], with_bias)
        layer = LowRankLinear(Y, None if b is None else xp.asarray(b))
        x = rng.standard_normal((g["N"], shape[1]))
        dy = rng.standard_normal((g["N"], shape[0]))
        return layer, xp.asarray(x), xp.asarray(dy)
    geo = {"stride": g["stride"], "padding": g["padding"], "dilation": g["dilation"]}
    if kind in ("tucker", "tucker-kform"):
        Y = random_tucker((g["c_out"], g["c_in"]) + g["k"], ranks, rng, xp=xp)
        b = _bias(rng, g["c_out"], with_bias)
        layer = TuckerConv2d(Y, None if b is None else xp.asarray(b), **geo)
        # "tucker": the three-stage forward (ALGORITHM.md §3); "tucker-kform": the training
        # forward and backward through the K-steps' convolutions (tucker_k_form)
        layer.k_form = kind == "tucker-kform"
        layer.dense_kernel = layer.dense_kernel if kind == "tucker" else False  # else it comes first
    else:
        Y = random_tucker((g["c_out"], g["c_in"] * g["k"][0] * g["k"][1]), ranks, rng, xp=xp)
        b = _bias(rng, g["c_out"], with_bias)
        layer = MatrixConv2d(Y, None if b is None else xp.asarray(b), kernel_size=g["k"], **geo)
    x = rng.standard_normal((g["N"], g["c_in"]) + g["hw"])
    Ho, Wo = (
        math.floor((n + 2 * p - d * (k - 1) - 1) / s) + 1
        for n, k, s, p, d in zip(g["hw"], g["k"], g["stride"], g["padding"], g["dilation"])
    )
    dy = rng.standard_normal((g["N"], g["c_out"], Ho, Wo))
    return layer, xp.asarray(x), xp.asarray(dy)


def dense_reference(kind, layer, x, dy):
    """(y, dx, G, db) from the dense pure functions with the reconstructed weight."""
    b = layer.params.get("b")
    if kind == "linear":
        y, cache = linear_forward(x, layer.dense_weight(), b)
        dx, G, db = linear_backward(dy, cache)
        return y, dx, G, db
    y, cache = conv2d_forward(
        x,
        layer.dense_weight(),
        b,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
    )
    dx, G, db = conv2d_backward(dy, cache)
    return y, dx, G.reshape(layer.dense_shape), db


def fro(a):
    return float(np.linalg.norm(to_numpy(a).ravel()))


def orthonormal(rng, n, m, xp):
    Q, _ = np.linalg.qr(rng.standard_normal((n, m)))
    return xp.asarray(Q)


KINDS = {"tucker": tucker_conv_cases(), "tucker-kform": tucker_conv_cases(),
         "matrix": matrix_conv_cases(), "linear": linear_cases()}


# ---------------------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_forward_backward_match_dense_layer_with_reconstructed_weight(xp, kind, data):
    layer, x, dy = make_layer(kind, data.draw(KINDS[kind]), xp)
    y = layer.forward(x, training=True)
    dx = layer.backward(dy)
    y_ref, dx_ref, G_ref, db_ref = dense_reference(kind, layer, x, dy)
    assert y.shape == y_ref.shape and dx.shape == x.shape
    assert_close(y, y_ref, np.float64, scale=fro(y_ref))
    assert_close(dx, dx_ref, np.float64, scale=fro(dx_ref))
    G = layer.dense_gradient()
    assert G.shape == layer.dense_shape
    assert_close(G, G_ref, np.float64, scale=fro(G_ref))
    if "b" in layer.params:
        assert_close(layer.grads["b"], db_ref, np.float64, scale=fro(db_ref))
    else:
        assert "b" not in layer.grads


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_bias_is_added_exactly_once(xp, kind, data):
    g, ranks, _, seed = data.draw(KINDS[kind])
    layer, x, _ = make_layer(kind, (g, ranks, True, seed), xp)
    y = layer.forward(x)
    bias = layer.params.pop("b")  # the same layer without bias
    y0 = layer.forward(x)
    shape = (1, -1, 1, 1) if y.ndim == 4 else (1, -1)
    assert_close(
        y - y0, xp.broadcast_to(bias.reshape(shape), y.shape), np.float64, scale=fro(y) + fro(y0)
    )


# ---------------------------------------------------------------------------- projectors


def mats_cases(kind, layer, rng, xp):
    """(label, mats): K-step projections, an augmented core projection, mixed None patterns."""
    Us = list(layer.weight.factors)
    d = len(Us)
    out = [
        (f"K-step mode {i}", [None if j == i else U for j, U in enumerate(Us)]) for i in range(d)
    ]
    out.append(("own bases", list(Us)))
    aug = [
        orthonormal(rng, n, min(n, r + 1 + int(rng.integers(0, 2))), xp)
        for n, r in zip(layer.dense_shape, layer.weight.ranks)
    ]
    out.append(("augmented", aug))
    for t in range(3):
        mixed = []
        for j, n in enumerate(layer.dense_shape):
            pick = int(rng.integers(0, 3))  # 0: None, 1: own basis (cached route), 2: random
            mixed.append(
                None
                if pick == 0
                else Us[j]
                if pick == 1
                else xp.asarray(rng.standard_normal((n, int(rng.integers(1, n + 2)))))
            )
        out.append((f"mixed {t}", mixed))
    # equal values in a different array object: must give the same numbers (no stale cache)
    out.append(("copied bases", [U.copy() for U in Us]))
    return out


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_projector_matches_dense_gradient_projection(xp, kind, data):
    case = data.draw(KINDS[kind])
    layer, x, dy = make_layer(kind, case, xp)
    layer.forward(x)
    layer.backward(dy)
    P = layer.projector()
    _, _, G_ref, _ = dense_reference(
        kind, layer, x, dy
    )  # independent dense G (conv.py / linear.py)
    oracle = DenseGradient(G_ref)
    rng = np.random.default_rng(case[-1] + 1)
    for label, mats in mats_cases(kind, layer, rng, xp):
        want = oracle.project(mats)
        got = P.project(mats)
        assert got.shape == want.shape, label
        assert_close(got, want, np.float64, scale=fro(want), err_msg=label)
        again = P.project(mats)  # memoised route gives the same numbers
        assert_close(again, want, np.float64, scale=fro(want), err_msg=label + " (repeat)")


def _step_counting_kernel_gradients(route, rng, monkeypatch):
    """One TDLRT step of a (6, 5, 3, 3) Tucker conv at ranks (2, 3, 2, 2) through the projector
    on ``route``; returns (the (input, output-gradient) channels of every kernel gradient, info)."""
    Y = random_tucker((6, 5, 3, 3), (2, 3, 2, 2), rng)
    layer = TuckerConv2d(Y, None, padding=1)
    layer.projection_route = route
    layer.forward(rng.standard_normal((2, 5, 6, 6)))
    layer.backward(rng.standard_normal((2, 6, 6, 6)))
    return _step_counting_kernel_gradients_of(layer, monkeypatch)


def _step_counting_kernel_gradients_of(layer, monkeypatch):
    """One TDLRT step of ``layer`` (after its backward) through its projector: (the (input,
    output-gradient) channels of every kernel gradient it took, info)."""
    calls, real = [], lp._conv2d_weight_grad

    def counting(xa, dya, *args):
        calls.append((xa.shape[1], dya.shape[1]))
        return real(xa, dya, *args)

    monkeypatch.setattr(lp, "_conv2d_weight_grad", counting)
    _, info = tdlrt_step(layer.weight, layer.projector(), 0.1, 0.0)
    return sorted(calls), info


def test_plain_route_never_forms_dense_gradient_and_memoises(rng, monkeypatch):
    """Two reduced kernel gradients, none dense: the S-step's (r̂1, r̂0), and the core's
    (r1, r0), taken once for the K-steps of modes 2, 3 and the diagnostic projection on the
    old bases; the K-steps of modes 0 and 1 contract Q_i into core-sized convolutions
    (k_gradient)."""
    calls, info = _step_counting_kernel_gradients("plain", rng, monkeypatch)
    ra = info.ranks_augmented
    assert calls == sorted([(3, 2), (ra[1], ra[0])]), calls


def test_plain_route_k_steps_convolve_only_core_sized_channels(rng, monkeypatch):
    """k_gradient: mode 0 is one convolution z1 (r1 channels) -> q = r0, mode 1 one input
    gradient dz2 (r0 channels) -> q = r1; no convolution touches C_in or C_out channels."""
    import refdlrt.nn.lowrank_projectors as lpm

    Y = random_tucker((6, 5, 3, 3), (2, 3, 2, 2), rng)
    layer = TuckerConv2d(Y, None, padding=1)
    layer.projection_route, layer.k_form = "plain", False  # the projector convolves itself
    layer.forward(rng.standard_normal((2, 5, 6, 6)))
    layer.backward(rng.standard_normal((2, 6, 6, 6)))
    seen = []
    fwd, inp = lpm.conv2d_forward, lpm.conv2d_input_grad
    monkeypatch.setattr(lpm, "conv2d_forward", lambda x, w, *a, **k: seen.append(("f", w.shape)) or fwd(x, w, *a, **k))
    monkeypatch.setattr(lpm, "conv2d_input_grad", lambda dy, w, *a, **k: seen.append(("dx", w.shape)) or inp(dy, w, *a, **k))
    tdlrt_step(layer.weight, layer.projector(), 0.1, 0.0, diagnostics=False)
    assert seen == [("f", (2, 3, 3, 3)), ("dx", (2, 3, 3, 3))], seen


def _drawn_layer_on_route(data, xp, route, kind="tucker"):
    """A drawn Tucker conv (``kind`` "tucker" or "tucker-kform") after forward and backward on
    ``route``: (layer, projector, the dense G as a DenseGradient oracle, the case's seed)."""
    case = data.draw(tucker_conv_cases())
    layer, x, dy = make_layer(kind, case, xp)
    layer.projection_route = route
    layer.forward(x)
    layer.backward(dy)
    return layer, layer.projector(), DenseGradient(dense_reference(kind, layer, x, dy)[2]), case[-1]


@pytest.mark.parametrize("route", ["plain", "blocks", "dense", "kform"])
@given(data=st.data())
def test_k_gradient_equals_the_textbook_contraction(xp, route, data):
    """fast = readable for the K-steps: k_gradient(i, mats, Q) = Mat_i(G x_j mats[j]^T) Q with
    the dense G, for every mode, at the layer's factors (the contracted convolutions on
    "plain", the K-form's own convolutions on "kform") and at other matrices (the fallback)."""
    kind, route = ("tucker-kform", "plain") if route == "kform" else ("tucker", route)
    layer, P, oracle, seed = _drawn_layer_on_route(data, xp, route, kind)
    Y = layer.weight
    rng = np.random.default_rng(seed + 3)
    for i in range(4):
        Q = qr_signfixed(unfold(Y.core, i).T)[0]
        own = [None if j == i else U for j, U in enumerate(Y.factors)]
        other = [None if j == i else orthonormal(rng, U.shape[0], U.shape[1], xp)
                 for j, U in enumerate(Y.factors)]
        for label, mats in (("own", own), ("other", other)):
            want = unfold(oracle.project(mats), i) @ Q
            got = P.k_gradient(i, mats, Q)
            assert got.shape == want.shape, (i, label)
            assert_close(got, want, np.float64, scale=fro(want), err_msg=f"mode {i}, {label}")


def test_blocks_route_convolves_only_the_new_directions(rng, monkeypatch):
    """The S-step's kernel gradient has r̂_i - r_i channels (the new directions) instead of r̂_i."""
    calls, info = _step_counting_kernel_gradients("blocks", rng, monkeypatch)
    ra = info.ranks_augmented
    assert ra[0] > 2 and ra[1] > 3  # both modes gained directions (else nothing to check)
    assert calls == sorted([(3, 6), (5, 2), (ra[1] - 3, ra[0] - 2)]), calls


def test_dense_route_forms_the_kernel_gradient_once(rng, monkeypatch):
    import refdlrt.nn.lowrank_layers as ll

    real, asked = ll.conv2d_backward, []
    monkeypatch.setattr(ll, "conv2d_backward",
                        lambda dy, cache, **kw: asked.append(kw) or real(dy, cache, **kw))
    calls, _ = _step_counting_kernel_gradients("dense", rng, monkeypatch)
    assert calls == [(5, 6)], calls
    assert asked == [{"need_dw": False}]  # the core conv's dK comes from G instead


@pytest.mark.parametrize("shape, ranks, k_form, want", [
    ((256, 256, 3, 3), (8, 8, 3, 3), False, "plain"),  # low ranks, wide layer: small gradients are cheaper
    ((64, 64, 3, 3), (8, 8, 3, 3), False, "plain"),  # the run.py layer at r = 8
    ((64, 64, 3, 3), (16, 16, 3, 3), False, "dense"),  # at r = 16, the K-steps convolving
    ((64, 64, 3, 3), (16, 16, 3, 3), "auto", "plain"),  # ... and with the K-form's free K-steps
    ((64, 64, 3, 3), (15, 15, 3, 3), "auto", "plain"),  # vgg_small's conv4 at its settled ranks
    ((64, 32, 3, 3), (16, 14, 3, 3), "auto", "dense"),  # vgg_small's conv3: r̂_1 = 28 of n_1 = 32
    ((32, 32, 3, 3), (14, 14, 3, 3), "auto", "dense"),  # vgg_small's conv2
    ((64, 64, 3, 3), (32, 32, 3, 3), "auto", "dense"),  # r̂ = n: the S-step alone costs a dense gradient
    ((16, 6, 5, 5), (12, 6, 5, 5), "auto", "dense"),  # LeNet's conv2 at its usual ranks
])
def test_auto_route_follows_the_cost_model(rng, shape, ranks, k_form, want):
    layer = TuckerConv2d(random_tucker(shape, ranks, rng), None, padding=shape[2] // 2)  # "same"
    layer.k_form = k_form
    layer.forward(rng.standard_normal((1, shape[1], 6, 6)))
    layer.backward(rng.standard_normal((1, shape[0], 6, 6)))
    P = layer.projector()
    assert P.route == want
    assert (P.k_parts is not None) == (want == "plain" and k_form == "auto")  # K-form only for plain
    assert min(P.cost(r) for r in ("plain", "blocks", "dense")) == P.cost(want)
    assert rc.cheapest_route(shape, *ranks[:2], k_form=P.k_parts is not None) == want


def test_a_bad_route_is_refused(rng):
    layer = TuckerConv2d(random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng), None, padding=1)
    layer.projection_route = "fast"
    layer.forward(rng.standard_normal((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="route: expected one of .*'fast'"):
        layer.backward(rng.standard_normal((1, 4, 5, 5)))


@pytest.mark.parametrize("route", ["blocks", "dense"])
@given(data=st.data())
def test_fast_routes_equal_the_dense_gradient_after_the_k_steps(xp, route, data):
    """fast = readable: after the K-steps' projections are memoised, G x_0 A0^T x_1 A1^T on the
    fast route equals the dense G's projection, for bases that extend U_i (the S-step's case),
    lie inside range(U_i) (no new direction) or are arbitrary."""
    layer, P, oracle, seed = _drawn_layer_on_route(data, xp, route)
    U = layer.weight.factors
    P.project([None, U[1], U[2], U[3]])  # the K-steps of modes 0 and 1
    P.project([U[0], None, U[2], U[3]])
    rng = np.random.default_rng(seed + 2)

    def extend(Ui, n):  # an orthonormal basis of range(U_i) + up to 2 random directions
        k = min(Ui.shape[1] + 2, n)
        B = np.concatenate([to_numpy(Ui), rng.standard_normal((n, k - Ui.shape[1]))], axis=1)
        return xp.asarray(np.linalg.qr(B)[0])

    n0, n1 = layer.dense_shape[:2]
    cases = {
        "extended": [extend(U[0], n0), extend(U[1], n1)],
        "inside": [U[0] @ xp.asarray(np.linalg.qr(rng.standard_normal((U[0].shape[1],) * 2))[0]),
                   U[1].copy()],
        "arbitrary": [orthonormal(rng, n0, 1 + rng.integers(n0), xp),
                      orthonormal(rng, n1, 1 + rng.integers(n1), xp)],
    }
    for label, (A0, A1) in cases.items():
        mats = [A0, A1, U[2], U[3]]
        want = oracle.project(mats)
        assert_close(P.project(mats), want, np.float64, scale=fro(want), err_msg=label)


def test_split_new_directions_reconstructs_and_counts_the_new_directions(rng):
    n, r = 9, 3
    U = orthonormal(rng, n, r, np)
    A = np.concatenate([U @ rng.standard_normal((r, 2)), orthonormal(rng, n, 2, np)], axis=1)
    B, N, S = lp.split_new_directions(A, U)
    assert N.shape == (n, 2)  # two columns reach outside range(U), whatever their mix
    np.testing.assert_allclose(U @ B + N @ S, A, rtol=0, atol=1e-14)  # a few ulps of |A| ~ 1
    np.testing.assert_allclose(N.T @ N, np.eye(2), rtol=0, atol=1e-14)
    np.testing.assert_allclose(U.T @ N, 0, rtol=0, atol=1e-14)
    B, N, S = lp.split_new_directions(U @ rng.standard_normal((r, 4)), U)  # all inside
    assert N.shape == (n, 0) and S.shape == (0, 4)


def test_split_new_directions_keeps_a_small_new_direction_of_a_wide_float32_basis(rng):
    """The cut is relative to the largest column, not to ||A||_F (which grows with the width):
    a direction leaving range(U) by 5e-4 in one of 256 orthonormal float32 columns is kept."""
    n, r = 512, 256
    Q = np.linalg.qr(rng.standard_normal((n, r + 1)))[0]
    U = Q[:, :r].astype(np.float32)
    A = U.copy()
    A[:, -1] = np.sqrt(1 - 5e-4**2) * Q[:, r - 1] + 5e-4 * Q[:, r]
    B, N, S = lp.split_new_directions(A, U)
    assert N.shape == (n, 1)
    # float32 rounding of 256-term sums: ~1e-5 here; the dropped direction would give 5e-4
    assert np.abs(U @ B + N @ S - A).max() < 1e-5


@pytest.mark.parametrize("kind", ["tucker-plain", "tucker-blocks", "tucker-dense", "tucker-kform-plain",
                                  "matrix", "linear"])
@given(data=st.data(), tau=st.sampled_from([0.0, 0.05, 0.3]))
def test_tdlrt_step_through_projector_equals_step_with_dense_gradient(xp, kind, data, tau):
    kind, _, route = kind.rpartition("-") if kind.startswith("tucker") else (kind, "", "")
    case = data.draw(tucker_conv_cases(need_compatible=True) if kind.startswith("tucker") else KINDS[kind])
    layer, x, dy = make_layer(kind, case, xp)
    if route:
        layer.projection_route = route
    layer.forward(x)
    layer.backward(dy)
    Y = layer.weight
    Y_proj, info_proj = tdlrt_step(Y, layer.projector(), 0.05, tau)
    Y_dense, info_dense = tdlrt_step(Y, layer.dense_gradient(), 0.05, tau)
    assert info_proj.ranks_after == info_dense.ranks_after
    assert info_proj.ranks_augmented == info_dense.ranks_augmented
    T_dense = Y_dense.to_tensor()
    assert_close(Y_proj.to_tensor(), T_dense, np.float64, scale=fro(T_dense))
    assert info_proj.grad_core_norm == pytest.approx(
        info_dense.grad_core_norm, rel=tolerance(np.float64).rtol
    )
    # the trainer assigns the new weight; the next forward must use it
    layer.weight = Y_proj
    layer.forward(x)
    assert layer.weight is Y_proj
    y_ref = dense_reference(kind, layer, x, dy)[0]
    assert_close(layer.forward(x), y_ref, np.float64, scale=fro(y_ref))


# ---------------------------------------------------------------------------- adjoint tests


def _rebuild(layer, core=None, b=None):
    Y = layer.weight if core is None else Tucker(core, layer.weight.factors)
    if isinstance(layer, TuckerConv2d):
        out = TuckerConv2d(Y, b, layer.stride, layer.padding, layer.dilation)
        out.k_form = layer.k_form
        return out
    if isinstance(layer, MatrixConv2d):
        return MatrixConv2d(Y, b, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return LowRankLinear(Y, b)


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_adjoint_input_bias_and_core(xp, kind, data):
    g, ranks, _, seed = data.draw(KINDS[kind])
    layer, x, _ = make_layer(kind, (g, ranks, True, seed), xp)
    core, b = layer.weight.core, layer.params["b"]

    def f(x, b, core):
        return _rebuild(layer, core, b).forward(x)

    def vjp(c):
        lay = _rebuild(layer, core, b)
        lay.forward(x)
        dx = lay.backward(c)
        dcore = lay.projector().project(list(lay.weight.factors))  # dL/dC = G x_i U_i^T
        return dx, lay.grads["b"], dcore

    results = adjoint_test(f, vjp, [x, b, core], np.random.default_rng(seed))
    assert len(results) == 3
    for r in results:
        assert r.ok, r


# ---------------------------------------------------------------------------- torch oracle


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["tucker", "tucker-kform"])
@given(case=tucker_conv_cases())
def test_tucker_conv_matches_torch_autograd(torch, kind, case):
    layer, x, dy = make_layer(kind, case, np)
    g = case[0]
    y = layer.forward(x)
    dx = layer.backward(dy)
    t = torch.tensor
    core = t(layer.weight.core, requires_grad=True)
    Us = [t(U, requires_grad=True) for U in layer.weight.factors]
    W = torch.einsum("abcd,oa,ib,hc,wd->oihw", core, *Us)
    W.retain_grad()
    xt = t(x, requires_grad=True)
    bt = None if "b" not in layer.params else t(layer.params["b"], requires_grad=True)
    yt = torch.nn.functional.conv2d(
        xt, W, bt, stride=g["stride"], padding=g["padding"], dilation=g["dilation"]
    )
    (yt * t(dy)).sum().backward()
    assert_close(y, yt.detach().numpy(), np.float64, scale=fro(y))
    assert_close(dx, xt.grad.numpy(), np.float64, scale=fro(dx))
    G = W.grad.numpy()
    assert_close(layer.dense_gradient(), G, np.float64, scale=fro(G))
    # the core gradient of the parametrisation is the projection on the layer's own bases
    assert_close(
        layer.projector().project(list(layer.weight.factors)),
        core.grad.numpy(),
        np.float64,
        scale=fro(G),
    )
    if bt is not None:
        assert_close(layer.grads["b"], bt.grad.numpy(), np.float64, scale=fro(dy))


# ---------------------------------------------------------------------------- constructors


def _as32(layer, xp):
    Y = layer.weight
    Y32 = Tucker(Y.core.astype(xp.float32), [U.astype(xp.float32) for U in Y.factors])
    b = layer.params.get("b")
    b32 = None if b is None else b.astype(xp.float32)
    if isinstance(layer, TuckerConv2d):
        out = TuckerConv2d(Y32, b32, layer.stride, layer.padding, layer.dilation)
        out.k_form = layer.k_form
        return out
    if isinstance(layer, MatrixConv2d):
        return MatrixConv2d(
            Y32, b32, layer.kernel_size, layer.stride, layer.padding, layer.dilation
        )
    return LowRankLinear(Y32, b32)


@pytest.mark.parametrize("kind", list(KINDS))
@given(data=st.data())
def test_float32_stays_float32_and_agrees_with_float64(xp, kind, data):
    layer, x, dy = make_layer(kind, data.draw(KINDS[kind]), xp)
    l32 = _as32(layer, xp)
    x32, dy32 = x.astype(xp.float32), dy.astype(xp.float32)
    y, y32 = layer.forward(x), l32.forward(x32)
    dx, dx32 = layer.backward(dy), l32.backward(dy32)
    mats = list(layer.weight.factors)
    p, p32 = layer.projector().project(mats), l32.projector().project(list(l32.weight.factors))
    for a, a32 in ((y, y32), (dx, dx32), (p, p32), (layer.dense_gradient(), l32.dense_gradient())):
        assert a32.dtype == np.float32
        assert_close(a32, a, np.float32, scale=fro(a))


def test_from_dense_at_full_rank_reproduces_the_weight(xp, rng):
    w = xp.asarray(rng.standard_normal((4, 3, 3, 2)))
    b = xp.asarray(rng.standard_normal(4))
    layer = TuckerConv2d.from_dense(w, b, (4, 3, 3, 2), padding=1)
    assert_close(layer.dense_weight(), w, np.float64, scale=fro(w))
    assert layer.params["b"] is b and layer.padding == (1, 1)
    m = MatrixConv2d.from_dense(w, b, (4, 4), stride=2)
    assert m.dense_shape == (4, 18) and m.kernel_size == (3, 2)
    assert_close(m.dense_weight(), w, np.float64, scale=fro(w))
    w2 = xp.asarray(rng.standard_normal((5, 3)))
    lin = LowRankLinear.from_dense(w2, None, (3, 3))
    assert_close(lin.dense_weight(), w2, np.float64, scale=fro(w2))


def test_from_dense_truncates_to_ranks_with_orthonormal_factors(rng):
    w = rng.standard_normal((6, 5, 3, 3))
    layer = TuckerConv2d.from_dense(w, None, (3, 2, 2, 1))
    assert layer.weight.ranks == (3, 2, 2, 1)
    for U in layer.weight.factors:
        ortho_tol = tolerance(np.float64).ortho * math.sqrt(U.shape[0])
        assert np.linalg.norm(U.T @ U - np.eye(U.shape[1])) < ortho_tol
    # truncation lost something, but the HOSVD is a projection: it cannot add norm
    assert 0 < fro(layer.dense_weight()) < fro(w)


# ---------------------------------------------------------------------------- validation


def test_bad_weights_and_inputs_raise(rng):
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    Y2 = random_tucker((4, 27), (2, 2), rng)
    with pytest.raises(ValueError, match="order 4"):
        TuckerConv2d(Y2)
    with pytest.raises(ValueError, match="order 2"):
        LowRankLinear(Y4)
    with pytest.raises(TypeError, match="Tucker"):
        TuckerConv2d(Y4.to_tensor())
    with pytest.raises(ValueError, match=r"b: expected shape \(4,\)"):
        TuckerConv2d(Y4, rng.standard_normal(3))
    with pytest.raises(TypeError, match="float64"):
        TuckerConv2d(Y4, rng.standard_normal(4).astype(np.float32))
    with pytest.raises(ValueError, match="kernel_size"):
        MatrixConv2d(random_tucker((4, 10), (2, 2), rng), kernel_size=3)
    with pytest.raises(ValueError, match="stride"):
        TuckerConv2d(Y4, stride=0)
    wide = Tucker(
        rng.standard_normal((2, 4)), (rng.standard_normal((4, 2)), rng.standard_normal((3, 4)))
    )
    with pytest.raises(ValueError, match="rank <= 3"):
        LowRankLinear(wide)
    layer = TuckerConv2d(Y4, padding=1)
    with pytest.raises(ValueError, match="fixes the shape"):
        layer.weight = random_tucker((4, 3, 3, 2), (2, 2, 2, 2), rng)
    with pytest.raises(TypeError, match="float64"):
        layer.weight = Tucker(
            Y4.core.astype(np.float32), [U.astype(np.float32) for U in Y4.factors]
        )
    with pytest.raises(ValueError, match="input channels"):
        layer.forward(rng.standard_normal((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="4-d"):
        layer.forward(rng.standard_normal((3, 5, 5)))
    with pytest.raises(TypeError, match="float64"):
        layer.forward(rng.standard_normal((1, 3, 5, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="input channels"):
        MatrixConv2d(Y2, kernel_size=3).forward(rng.standard_normal((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="input channels"):
        LowRankLinear(Y2).forward(rng.standard_normal((2, 26)))


def test_call_order_and_gradient_shapes_are_checked(rng):
    layer = TuckerConv2d(random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng), padding=1)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(rng.standard_normal((1, 4, 5, 5)))
    x = rng.standard_normal((1, 3, 5, 5))
    layer.forward(x)
    with pytest.raises(RuntimeError, match="backward pass first"):
        layer.projector()
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 4, 5, 5\)"):
        layer.backward(rng.standard_normal((1, 4, 4, 5)))
    layer.backward(rng.standard_normal((1, 4, 5, 5)))
    P = layer.projector()
    with pytest.raises(ValueError, match="one per mode"):
        P.project([None, None])
    with pytest.raises(ValueError, match=r"mats\[1\] must have shape \(3, m\)"):
        P.project([None, rng.standard_normal((4, 2)), None, None])
    layer.forward(x)  # a new forward invalidates the old projector
    with pytest.raises(RuntimeError, match="backward pass first"):
        layer.dense_gradient()


def test_momentum_k_gradient_equals_the_textbook_contraction(rng):
    """MomentumGradient.k_gradient (the projector's contraction for G, the core for μV) equals
    Mat_i((G + μV) x_{j≠i} U_j^T) Q from the dense G, V = v x_i U_i formed."""
    from refdlrt.dlrt.projector import MomentumGradient

    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (3, 2, 2, 3), rng), None, padding=1)
    layer.projection_route = "plain"
    x = rng.standard_normal((2, 5, 6, 6))
    dy = rng.standard_normal(layer.forward(x).shape)
    layer.backward(dy)
    Y, v, mu = layer.weight, rng.standard_normal((3, 2, 2, 3)), 0.9
    D = layer.dense_gradient() + mu * Tucker(v, Y.factors).to_tensor()
    fast = MomentumGradient(layer.projector(), v, tuple(Y.factors), mu)
    for i in range(4):
        Q = qr_signfixed(unfold(Y.core, i).T)[0]
        mats = [None if j == i else U for j, U in enumerate(Y.factors)]
        want = unfold(DenseGradient(D).project(mats), i) @ Q
        assert_close(fast.k_gradient(i, mats, Q), want, np.float64, scale=fro(want), err_msg=f"mode {i}")


@pytest.mark.parametrize("k_form", [False, True])
def test_k_gradient_when_q_is_below_the_rank(rng, monkeypatch, k_form):
    """Ranks (1, 3, 1, 2): Mat_1(C)^T has 2 rows, so Q of mode 1 has q = 2 < r_1 = 3 columns
    (the K-step is n_1 x q) and Q of mode 0 has q = min(1, 6) = 1: both contract (the transposed
    convolution of mode 1 has q, not r_1, channels) and equal the dense G's contraction. With
    the K-form the layer ran that convolution (its K_1 = U_1 R_1^T is n_1 x q), so the projector
    runs none, and y and dx still equal the dense layer's."""
    import refdlrt.nn.lowrank_projectors as lpm

    layer = TuckerConv2d(random_tucker((4, 5, 3, 3), (1, 3, 1, 2), rng), None, padding=1)
    layer.projection_route, layer.k_form = "plain", k_form
    x = rng.standard_normal((2, 5, 6, 6))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    y_ref, dx_ref, _, _ = dense_reference("tucker", layer, x, dy)
    assert_close(y, y_ref, np.float64, scale=fro(y_ref))
    assert_close(dx, dx_ref, np.float64, scale=fro(dx_ref))
    P, Y, G = layer.projector(), layer.weight, layer.dense_gradient()
    seen, inp = [], lpm.conv2d_input_grad
    monkeypatch.setattr(lpm, "conv2d_input_grad",
                        lambda dy_, w, shape, **k: seen.append(shape) or inp(dy_, w, shape, **k))
    for i, q in ((0, 1), (1, 2)):
        Q = qr_signfixed(unfold(Y.core, i).T)[0]
        assert Q.shape[1] == q
        mats = [None if j == i else U for j, U in enumerate(Y.factors)]
        want = unfold(DenseGradient(G).project(mats), i) @ Q
        assert_close(P.k_gradient(i, mats, Q), want, np.float64, scale=fro(want), err_msg=f"mode {i}")
    assert seen == ([] if k_form else [(2, 2, 6, 6)])  # mode 1 contracted, with q = 2 channels


def test_k_gradient_rejects_bad_arguments(rng):
    layer = TuckerConv2d(random_tucker((4, 5, 3, 3), (2, 3, 3, 3), rng), None, padding=1)
    x = rng.standard_normal((1, 5, 4, 4))
    layer.backward(rng.standard_normal(layer.forward(x).shape))
    P, U = layer.projector(), layer.weight.factors
    with pytest.raises(ValueError, match=r"expected 4 matrices with None at mode i = 0"):
        P.k_gradient(0, [None, U[1], U[2]], np.zeros((27, 2)))
    with pytest.raises(ValueError, match=r"expected 4 matrices with None at mode i = 1"):
        P.k_gradient(1, list(U), np.zeros((18, 3)))
    with pytest.raises(ValueError, match=r"Q: expected 27 rows .* got shape \(26, 2\)"):
        P.k_gradient(0, [None, U[1], U[2], U[3]], np.zeros((26, 2)))


@pytest.mark.parametrize("fixed_rank", [False, True])
def test_plain_route_step_with_momentum_equals_the_dense_gradient_step(rng, fixed_rank):
    """fast = readable for a whole step through tdlrt_step: the plain route (K-steps by
    contraction inside MomentumGradient, the core's dK taken lazily when the fixed-rank step
    asks for the square spatial modes' K-steps) against the same step from the dense G."""
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (3, 2, 3, 3), rng), None, padding=1)
    layer.projection_route = "plain"
    x = rng.standard_normal((2, 5, 6, 6))
    layer.backward(rng.standard_normal(layer.forward(x).shape))
    v = rng.standard_normal((3, 2, 3, 3))
    kw = dict(fixed_rank=fixed_rank, diagnostics=False, momentum=0.9, velocity=v)
    fast, info = tdlrt_step(layer.weight, layer.projector(), 0.1, 0.1, **kw)
    slow, info_slow = tdlrt_step(layer.weight, layer.dense_gradient(), 0.1, 0.1, **kw)
    assert fast.ranks == slow.ranks
    assert_close(fast.to_tensor(), slow.to_tensor(), np.float64, scale=fro(slow.to_tensor()))
    assert_close(info.velocity, info_slow.velocity, np.float64, scale=fro(info_slow.velocity))


# ---------------------------------------------------------------------------- the K-form


def _layer_pair(case, xp, route="plain"):
    """The same drawn Tucker conv twice after forward and backward on ``route``: K-form and
    three-stage; returns (K-form layer, three-stage layer, x, dy)."""
    pair = []
    for kind in ("tucker-kform", "tucker"):
        layer, x, dy = make_layer(kind, case, xp)
        layer.projection_route = route
        layer.forward(x)
        layer.backward(dy)
        pair.append(layer)
    return pair[0], pair[1], x, dy


@given(data=st.data(), tau=st.sampled_from([0.0, 0.3]), momentum=st.sampled_from([0.0, 0.9]))
def test_the_k_form_equals_the_three_stage_forward_and_its_k_steps_bit_for_bit(xp, data, tau, momentum):
    """K-form against the three-stage forward on the same layer and data: y, dx, db to rounding;
    the K-steps' gradients bit for bit (the same convolutions, run by the layer instead of the
    projector: k_kernel makes both kernels); so a whole tdlrt_step gives the same numbers, with
    momentum too (the trainer's step: MomentumGradient hands the K-steps to the projector)."""
    case = data.draw(tucker_conv_cases(need_compatible=True))
    kf, plain, x, dy = _layer_pair(case, xp)
    assert isinstance(kf._cache, KFormCache) and not isinstance(plain._cache, KFormCache)
    y_ref, dx_ref, _, db_ref = dense_reference("tucker", plain, x, dy)
    y = kf.forward(x)
    assert_close(y, y_ref, np.float64, scale=fro(y_ref))
    assert_close(kf.backward(dy), dx_ref, np.float64, scale=fro(dx_ref))
    if db_ref is not None:
        assert_close(kf.grads["b"], db_ref, np.float64, scale=fro(db_ref))
    P, P3 = kf.projector(), plain.projector()
    assert P.k_parts is not None and P3.k_parts is None
    Y = kf.weight
    for i in (0, 1):
        Q = qr_signfixed(unfold(Y.core, i).T)[0]
        mats = [None if j == i else U for j, U in enumerate(Y.factors)]
        got, want = to_numpy(P.k_gradient(i, mats, Q)), to_numpy(P3.k_gradient(i, mats, Q))
        np.testing.assert_array_equal(got, want, err_msg=f"mode {i}")
    v = xp.asarray(np.random.default_rng(case[-1]).standard_normal(Y.ranks)) if momentum else None
    kw = dict(diagnostics=False, momentum=momentum, velocity=v)
    a, _ = tdlrt_step(Y, P, 0.05, tau, **kw)
    b, _ = tdlrt_step(Y, P3, 0.05, tau, **kw)
    for u, v in zip((a.core, *a.factors), (b.core, *b.factors)):
        np.testing.assert_array_equal(to_numpy(u), to_numpy(v))


def test_the_k_form_k_steps_convolve_nothing(rng, monkeypatch):
    """With the K-form, the forward convolves z1 with F_0 (q_0 = r_0 output channels) and the
    backward takes the input gradient of E_1 (q_1 = r_1 input channels); the step's K-steps then
    run no convolution, only the S-step's one kernel gradient (r̂_0 x r̂_1 channels)."""
    import refdlrt.nn.tucker_k_form as kfm

    layer_seen, proj_seen = [], []
    fwd, inp = kfm.conv2d_forward, kfm.conv2d_input_grad
    monkeypatch.setattr(kfm, "conv2d_forward", lambda x, w, *a, **k: layer_seen.append(("f", w.shape)) or fwd(x, w, *a, **k))
    monkeypatch.setattr(kfm, "conv2d_input_grad", lambda d, w, *a, **k: layer_seen.append(("dx", w.shape)) or inp(d, w, *a, **k))
    pf, pi = lp.conv2d_forward, lp.conv2d_input_grad
    monkeypatch.setattr(lp, "conv2d_forward", lambda x, w, *a, **k: proj_seen.append(w.shape) or pf(x, w, *a, **k))
    monkeypatch.setattr(lp, "conv2d_input_grad", lambda d, w, *a, **k: proj_seen.append(w.shape) or pi(d, w, *a, **k))
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (2, 3, 2, 2), rng), None, padding=1)
    layer.projection_route, layer.k_form = "plain", True
    layer.forward(rng.standard_normal((2, 5, 6, 6)))
    layer.backward(rng.standard_normal((2, 6, 6, 6)))
    assert layer_seen == [("f", (2, 3, 3, 3)), ("dx", (2, 3, 3, 3))], layer_seen
    calls, info = _step_counting_kernel_gradients_of(layer, monkeypatch)
    assert proj_seen == [], proj_seen
    assert calls == sorted([(3, 2), (info.ranks_augmented[1], info.ranks_augmented[0])]), calls


def test_the_k_form_projector_convolves_for_another_q(rng, monkeypatch):
    """k_parts hold the convolutions of the Q_i of the forward's core: asked with another Q (a
    core changed since, or any other contraction), the projector convolves itself and still
    equals the dense G's contraction; with the Q check removed (a planted bug), the answer
    would be the stale one, which this comparison catches."""
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (2, 3, 2, 2), rng), None, padding=1)
    layer.projection_route, layer.k_form = "plain", True
    x = rng.standard_normal((2, 5, 6, 6))
    layer.backward(rng.standard_normal(layer.forward(x).shape))
    P, Y, G = layer.projector(), layer.weight, layer.dense_gradient()

    def check(P):
        for i in (0, 1):
            Q = qr_signfixed(unfold(Y.core, i).T)[0]
            other = np.linalg.qr(rng.standard_normal(Q.shape))[0]
            mats = [None if j == i else U for j, U in enumerate(Y.factors)]
            want = unfold(DenseGradient(G).project(mats), i) @ other
            assert_close(P.k_gradient(i, mats, other), want, np.float64, scale=fro(want))

    check(P)
    stale = lp.TuckerConvProjector(P.x, P.z1, P.dy, P.dz2, Y.factors, P.geometry, route="plain",
                                   k_parts={i: (np.linalg.qr(rng.standard_normal(q.shape))[0], v)
                                            for i, (q, v) in P.k_parts.items()})
    check(stale)  # parts of another Q: not used
    # test the tester: a projector that trusts its parts for any Q (parts keyed None here, and
    # None taken as a match) gives the stale answer, and the comparison catches it
    planted = lp.TuckerConvProjector(P.x, P.z1, P.dy, P.dz2, Y.factors, P.geometry, route="plain",
                                     k_parts={i: (None, v) for i, (_, v) in P.k_parts.items()})
    same = lp._same
    monkeypatch.setattr(lp, "_same", lambda a, b: a is None or same(a, b))
    with pytest.raises(AssertionError):
        check(planted)


@pytest.mark.parametrize("k_form, route, training, want", [
    (True, "dense", True, True),  # forced: even where the projector forms G
    (False, "plain", True, False),  # never
    ("auto", "plain", True, True),  # asked for plain: the K-steps' convolutions pay
    ("auto", "blocks", True, False),
    ("auto", "dense", True, False),
    ("auto", "plain", False, False),  # an evaluation forward has no backward
])
def test_the_k_form_setting(rng, k_form, route, training, want):
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (2, 3, 2, 2), rng), rng.standard_normal(6), padding=1)
    layer.projection_route, layer.k_form, layer.dense_kernel = route, k_form, False
    x = rng.standard_normal((2, 5, 6, 6))
    y = layer.forward(x, training=training)
    assert isinstance(layer._cache, KFormCache) is want
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    y_ref, dx_ref, G, _ = dense_reference("tucker", layer, x, dy)
    assert_close(y, y_ref, np.float64, scale=fro(y_ref))
    assert_close(dx, dx_ref, np.float64, scale=fro(dx_ref))
    assert (layer.projector().k_parts is not None) is want
    mats = list(layer.weight.factors)
    want_core = DenseGradient(G).project(mats)
    assert_close(layer.projector().project(mats), want_core, np.float64, scale=fro(want_core))


@pytest.mark.parametrize("route", ["k_form", "three-stage", "dense kernel"])
def test_the_backward_and_projector_use_the_forward_weight_after_an_in_place_change(rng, route):
    """Arrays of the weight changed in place between forward and backward (core scaled, the
    spatial and input bases' columns permuted): dx is still the forward kernel's, and every
    projection, at the changed bases too, is still the kernel gradient's (G does not depend on
    the weight); the K-form's parts, made with the old bases, are not used for the new ones."""
    Y = random_tucker((6, 5, 3, 3), (3, 3, 3, 3), rng)
    layer = TuckerConv2d(Y, rng.standard_normal(6), padding=1)
    layer.projection_route = "plain" if route != "dense kernel" else "auto"
    layer.k_form, layer.dense_kernel = route == "k_form", route == "dense kernel"
    x = rng.standard_normal((2, 5, 6, 6))
    W0, b = layer.dense_weight().copy(), layer.params["b"]
    y = layer.forward(x)
    Y.core[...] *= 2.0
    Y.factors[1][...] = Y.factors[1][:, ::-1].copy()
    Y.factors[2][...] = Y.factors[2][:, ::-1].copy()
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    y_ref, cache = conv2d_forward(x, W0, b, padding=1)
    dx_ref, G, _ = conv2d_backward(dy, cache)
    assert_close(y, y_ref, np.float64, scale=fro(y_ref))
    assert_close(dx, dx_ref, np.float64, scale=fro(dx_ref))
    P, oracle = layer.projector(), DenseGradient(G)
    for i in range(4):
        Q = qr_signfixed(unfold(Y.core, i).T)[0]
        mats = [None if j == i else U for j, U in enumerate(Y.factors)]
        want = unfold(oracle.project(mats), i) @ Q
        assert_close(P.k_gradient(i, mats, Q), want, np.float64, scale=fro(want), err_msg=f"mode {i}")
    assert_close(P.project(list(Y.factors)), oracle.project(list(Y.factors)), np.float64, scale=fro(G))


def test_a_bad_k_form_setting_is_refused(rng):
    layer = TuckerConv2d(random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng), None, padding=1)
    layer.k_form = "yes"
    with pytest.raises(ValueError, match=r"TuckerConv2d: k_form: expected 'auto', True or False, got 'yes'"):
        layer.forward(rng.standard_normal((1, 3, 5, 5)))


def test_a_planted_wrong_transpose_in_the_k_form_is_caught(rng, monkeypatch):
    """Test the tester: K_0 = U_0 R_0 instead of U_0 R_0^T (the classic transposed factor) makes
    the forward differ from the dense layer's, and the comparison the tests use fails."""
    import refdlrt.nn.tucker_k_form as kfm

    qr = kfm.qr_signfixed
    monkeypatch.setattr(kfm, "qr_signfixed", lambda A: (lambda Q, R: (Q, R.T))(*qr(A)))
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), (3, 3, 2, 2), rng), None, padding=1)
    layer.k_form = True
    x = rng.standard_normal((2, 5, 6, 6))
    y = layer.forward(x)
    y_ref = dense_reference("tucker", layer, x, rng.standard_normal(y.shape))[0]
    with pytest.raises(AssertionError):
        assert_close(y, y_ref, np.float64, scale=fro(y_ref))


# ---------------------------------------------------------------------------- the dense kernel


@pytest.mark.parametrize("route", ["auto", "dense"])
@given(data=st.data(), tau=st.sampled_from([0.0, 0.3]))
def test_the_dense_kernel_forward_equals_the_tucker_forward_and_step(xp, route, data, tau):
    """TuckerConv2d through its dense kernel (tucker_dense_kernel) against the Tucker route on
    the same layer: y, dx, db, the projections of G, and a tdlrt_step through each projector."""
    from refdlrt.nn.tucker_dense_kernel import DenseKernelCache

    layer, x, dy = make_layer("tucker", data.draw(tucker_conv_cases(need_compatible=True)), xp)
    layer.projection_route = route
    rng = np.random.default_rng(3)
    n0, n1 = layer.dense_shape[:2]
    mats = [orthonormal(rng, n0, max(1, n0 // 2), xp), orthonormal(rng, n1, max(1, n1 // 2), xp),
            None, None]
    got = {}
    for dense in (False, True):
        layer.dense_kernel = dense
        y = layer.forward(x)
        assert isinstance(layer._cache, DenseKernelCache) is dense  # the route asked for ran
        dx = layer.backward(dy)
        P = layer.projector()
        Y_new, info = tdlrt_step(layer.weight, P, 0.05, tau)
        got[dense] = (y, dx, layer.grads.get("b"), P.project(mats), Y_new.to_tensor(), info.ranks_after)
    assert got[True][5] == got[False][5]
    for a, b in zip(got[True][:5], got[False][:5]):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape
            assert_close(a, b, np.float64, scale=fro(b))


def test_the_dense_kernel_rule_follows_the_multiplication_counts():
    from refdlrt.nn.tucker_dense_kernel import DENSE_KERNEL_SHARE, dense_kernel_pays

    def pays(shape, ranks, hw, padding=0):
        Y = random_tucker(shape, ranks, np.random.default_rng(0))
        return dense_kernel_pays(Y, hw, ((1, 1), (padding, padding), (1, 1)))

    assert DENSE_KERNEL_SHARE == 0.75
    assert pays((16, 6, 5, 5), (13, 6, 5, 5), (14, 14))  # LeNet5's conv2, settled: 0.93 of dense
    assert not pays((16, 6, 5, 5), (8, 3, 5, 5), (14, 14))  # its initial ranks: 0.32
    assert pays((16, 6, 5, 5), (12, 6, 5, 5), (14, 14))  # and at (12, 6): 0.86
    assert not pays((32, 32, 3, 3), (16, 16, 3, 3), (28, 28), 1)  # vgg_small's conv2: 0.36
    # 1 x 1 kernels on one pixel: C_in r1 + r0 r1 + r0 C_out multiplications against C_out C_in
    assert pays((4, 4, 1, 1), (2, 2, 1, 1), (1, 1))  # 8 + 4 + 8 = 20 >= 0.75 x 16 = 12
    assert not pays((4, 4, 1, 1), (1, 1, 1, 1), (1, 1))  # 4 + 1 + 4 = 9 < 12
    assert pays((2, 6, 1, 1), (1, 1, 1, 1), (1, 1))  # 6 + 1 + 2 = 9 = 0.75 x 12: the boundary
    assert not pays((2, 6, 1, 1), (1, 1, 1, 1), (1, 1), 1)  # padding 1: 6 + 9 (1 + 2) = 33 < 0.75 x 108


@pytest.mark.parametrize("route", ["plain", "blocks"])
def test_the_plain_and_blocks_routes_never_take_the_dense_kernel(rng, route):
    from refdlrt.nn.tucker_dense_kernel import DenseKernelCache

    layer = TuckerConv2d(random_tucker((16, 6, 5, 5), (13, 6, 5, 5), rng), None)
    x = rng.standard_normal((2, 6, 14, 14))
    layer.forward(x)
    assert isinstance(layer._cache, DenseKernelCache)  # auto: the rule says dense
    dy = rng.standard_normal((2, 16, 10, 10))
    layer.projection_route = route  # set after the forward: the backward still takes it
    dx = layer.backward(dy)
    P = layer.projector()
    assert P.route == route
    U0, U1 = layer.weight.factors[:2]
    A0, A1 = orthonormal(rng, 16, 7, np), orthonormal(rng, 6, 4, np)
    Q = orthonormal(rng, 6 * 25, 5, np)  # a K-step's Q for mode 0 (r1 r2 r3 rows)
    got = (P.z1, P.dz2, P.project([U0, U1, None, None]), P.project([A0, A1, None, None]),
           P.k_gradient(0, [None, U1, *layer.weight.factors[2:]], Q))
    layer.dense_kernel = True
    layer.forward(x)
    assert not isinstance(layer._cache, DenseKernelCache)  # z1 and dz2 are needed there
    assert_close(layer.backward(dy), dx, np.float64, scale=fro(dx))
    P = layer.projector()
    assert P.route == route
    want = (P.z1, P.dz2, P.project([U0, U1, None, None]), P.project([A0, A1, None, None]),
            P.k_gradient(0, [None, U1, *layer.weight.factors[2:]], Q))
    for a, b in zip(got, want):  # z1 = U_1^T x and dz2 = U_0^T dy as the Tucker backward's
        assert a.shape == b.shape
        assert_close(a, b, np.float64, scale=fro(b))


def test_the_dense_kernel_forward_checks_its_input_dy_and_setting(rng):
    layer = TuckerConv2d(random_tucker((16, 6, 5, 5), (13, 6, 5, 5), rng), None)
    layer.dense_kernel = True
    with pytest.raises(ValueError, match="TuckerConv2d: x has 5 input channels/features, the weight expects 6"):
        layer.forward(rng.standard_normal((2, 5, 14, 14)))
    with pytest.raises(TypeError, match="TuckerConv2d: x: expected dtype float64"):
        layer.forward(rng.standard_normal((2, 6, 14, 14)).astype(np.float32))
    layer.forward(rng.standard_normal((2, 6, 14, 14)))
    with pytest.raises(ValueError, match=r"dense_kernel_backward: dy: expected shape \(2, 16, 10, 10\)"):
        layer.backward(rng.standard_normal((2, 16, 9, 10)))
    layer.dense_kernel = "yes"
    for route in ("auto", "plain"):  # refused whatever the route
        layer.projection_route = route
        with pytest.raises(ValueError, match="dense_kernel: expected 'auto', True or False, got 'yes'"):
            layer.forward(rng.standard_normal((2, 6, 14, 14)))
