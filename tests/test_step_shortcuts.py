"""The shortcuts a TDLRT step takes to spend less time per call (issue 14), each against the
long way it replaces: the same numbers (bit for bit where the shortcut skips an exact product),
and the work it skips really skipped.

* hosvd takes each mode's rank from the tails it already has (``_rank_from_tails``), not
  through ``truncation_rank``'s checks of its own singular values;
* the "dense" route of ``TuckerConvProjector`` projects the kept G directly, with no memo;
* ``MomentumGradient`` leaves v unprojected where a projection is onto the weight's own basis
  (V x_j U_j^T = v, U_j^T U_j = I);
* ``s_step`` leaves an identity Û_i (a square factor's) unprojected;
* ``StepInfo.orthonormality_error`` is computed when read, not in every step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import refdlrt.dlrt.step_info as step_info_mod
from refdlrt.backend import to_numpy
from refdlrt.dlrt.integrator import s_step, tdlrt_step
from refdlrt.dlrt.problems import random_tucker
from refdlrt.dlrt.projector import DenseGradient, MomentumGradient
from refdlrt.nn.lowrank_layers import TuckerConv2d
from refdlrt.tensor.hosvd import _rank_from_tails, hosvd, tail_norms
from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import assert_close


def _tau_rule(s, theta, r_min, r_max):
    """The rule written out: the smallest r whose discarded tail (Σ_{j>r} σ_j²)^{1/2} is at most
    ϑ, clamped to [r_min, r_max] and to the k singular values there are."""
    k = len(s)
    r = next(r for r in range(k + 1) if np.sqrt(np.sum(np.asarray(s, dtype=np.float64)[r:] ** 2)) <= theta)
    return min(max(r, r_min), r_max, k)


@given(sigma=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8),
       theta=st.floats(0.0, 12.0), r_min=st.integers(1, 9), extra=st.integers(0, 3))
def test_rank_from_tails_is_the_tau_rule(sigma, theta, r_min, extra):
    s = np.sort(np.array(sigma))[::-1]
    t = tail_norms(s)
    if theta > 0 and np.any(np.isclose(t, theta, rtol=1e-12, atol=0.0)):  # a tie within rounding:
        return  # either side is right (ϑ = 0 is no tie: it keeps exactly the non-zero σ)
    assert _rank_from_tails(t, theta, r_min, r_min + extra) == _tau_rule(s, theta, r_min, r_min + extra)


def test_rank_from_tails_keeps_a_tail_equal_to_theta():
    t = tail_norms(np.array([4.0, 3.0]))  # exactly [5, 3, 0] (4 sqrt(1.5625), 4 sqrt(0.5625), 0)
    assert list(t) == [5.0, 3.0, 0.0]
    assert _rank_from_tails(t, 3.0, 1, 2) == 1  # a discarded tail of exactly ϑ is allowed
    assert _rank_from_tails(t, 0.0, 1, 2) == 2  # ϑ = 0 keeps every non-zero σ


def test_hosvd_takes_its_ranks_without_truncation_rank(rng, monkeypatch):
    """Each mode's rank is the τ rule on its own singular values, with r_min deciding one mode and
    r_max another; hosvd no longer calls truncation_rank (whose checks its own σ pass anyway)."""
    import refdlrt.tensor.hosvd as hosvd_mod

    def refuse(*a, **k):
        raise AssertionError("hosvd called truncation_rank")

    monkeypatch.setattr(hosvd_mod, "truncation_rank", refuse)
    Q = [np.linalg.qr(rng.standard_normal((n, n)))[0] for n in (6, 5, 4)]
    core = np.zeros((6, 5, 4))
    core[0, 0, 0], core[1, 1, 1], core[2, 2, 2], core[3, 3, 3] = 10.0, 6.0, 0.5, 0.2
    T = Tucker(core, tuple(Q)).to_tensor()  # σ of every unfolding: 10, 6, 0.5, 0.2, 0, ...
    lo, hi = (1, 3, 1), (6, 5, 1)  # with ϑ = 0.1 ||T||: mode 0 by the rule, 1 by r_min, 2 by r_max
    Y, info = hosvd(T, tau=0.1, r_min=lo, r_max=hi)
    assert Y.ranks == (2, 3, 1)
    for i, s in enumerate(info.singular_values):
        assert Y.ranks[i] == _tau_rule(s, info.theta, lo[i], hi[i])
        assert info.tails[i] == pytest.approx(np.sqrt(np.sum(np.asarray(s[Y.ranks[i]:], np.float64) ** 2)),
                                              rel=1e-12, abs=1e-12 * info.norm)  # two float64 sums


def _layer_after_backward(rng, route, ranks=(3, 2, 3, 3)):
    layer = TuckerConv2d(random_tucker((6, 5, 3, 3), ranks, rng), None, padding=1)
    layer.projection_route = route
    x = rng.standard_normal((2, 5, 6, 6))
    layer.backward(rng.standard_normal(layer.forward(x).shape))
    return layer


def test_dense_route_projects_the_kept_gradient_without_a_memo(rng):
    layer = _layer_after_backward(rng, "dense")
    P, G = layer.projector(), layer.dense_gradient()
    A0, A1 = np.linalg.qr(rng.standard_normal((6, 4)))[0], np.linalg.qr(rng.standard_normal((5, 3)))[0]
    for mats in ([A0, A1, None, None], [None, layer.weight.factors[1], None, None], [A0, None, None, None]):
        got = P.project(mats)
        np.testing.assert_array_equal(got, DenseGradient(P._G).project(mats))  # the same products
        assert_close(got, DenseGradient(G).project(mats), np.float64)
    assert P._memo == []  # nothing memoised on this route
    plain = _layer_after_backward(rng, "plain")
    plain.projector().project([A0, A1, None, None])
    assert len(plain.projector()._memo) == 1  # the other routes still memoise


def test_velocity_is_left_unprojected_on_the_weights_own_bases(rng):
    Y = random_tucker((5, 4, 3), (2, 3, 2), rng)
    v, mu = rng.standard_normal(Y.ranks), 0.7
    M = MomentumGradient(DenseGradient(np.zeros(Y.shape)), v, tuple(Y.factors), mu)
    A = np.linalg.qr(rng.standard_normal((3, 2)))[0]  # a basis of mode 2 other than U_2
    U0, U1, U2 = Y.factors
    mats_v = M._velocity_mats([None, U1, A])
    assert mats_v[0] is U0 and mats_v[1] is None
    np.testing.assert_array_equal(mats_v[2], A.T @ U2)
    # the shortcut is exact math: a copy of U_1 (not the object) takes the product U_1^T U_1 = I
    for mats in ([None, U1, U2], [None, U1.copy(), U2.copy()], [U0, None, A]):
        want = Tucker(v, Y.factors).to_tensor()  # V, formed
        for i, B in enumerate(mats):
            if B is not None:
                want = np.moveaxis(np.tensordot(B.T, want, axes=([1], [i])), 0, i)
        assert_close(M.project(mats), mu * want, np.float64)


class _Recorder:
    """A dense-gradient projector that records the matrices it is asked to project with."""

    def __init__(self, G):
        self.G, self.seen = G, []

    def project(self, mats):
        self.seen.append(list(mats))
        return DenseGradient(self.G).project(mats)


def test_s_step_leaves_identity_bases_unprojected(xp, rng):
    G = xp.asarray(rng.standard_normal((4, 3, 3)))
    C_hat = xp.asarray(rng.standard_normal((2, 3, 3)))
    U0 = xp.asarray(np.linalg.qr(rng.standard_normal((4, 2)))[0])
    U_hats = [U0, xp.eye(3), xp.asarray(np.linalg.qr(rng.standard_normal((3, 3)))[0])]  # and a square non-identity
    rec = _Recorder(G)
    C_tilde, grad_C = s_step(C_hat, U_hats, rec, 0.1)
    (mats,) = rec.seen
    assert mats[0] is U0 and mats[1] is None and mats[2] is U_hats[2]
    want = DenseGradient(G).project(U_hats)  # with the identity's product
    np.testing.assert_array_equal(to_numpy(grad_C), to_numpy(want))  # x 1 and + 0 are exact
    np.testing.assert_array_equal(to_numpy(C_tilde), to_numpy(C_hat - 0.1 * want))


def test_orthonormality_error_is_computed_when_read(rng, monkeypatch):
    calls = []
    real = step_info_mod.max_orthonormality_error
    monkeypatch.setattr(step_info_mod, "max_orthonormality_error", lambda Us: calls.append(1) or real(Us))
    Y = random_tucker((6, 5, 4), (2, 2, 2), rng)
    Y_new, info = tdlrt_step(Y, rng.standard_normal(Y.shape), 0.1, 0.1, diagnostics=False)
    assert calls == []  # the step itself does not compute it
    assert info.orthonormality_error == real(Y_new.factors)
    assert info.orthonormality_error == info.orthonormality_error and calls == [1]  # once, then kept
    assert all(a is b for a, b in zip(info.new_factors, Y_new.factors))


def test_orthonormality_error_reads_the_new_factors():
    U = 2 * np.eye(3)[:, :2]  # U^T U - I = 3 I_2: error 3 sqrt(2)
    V = np.eye(4)[:, :3]  # orthonormal: 0
    info = replace(_some_step_info(), new_factors=(V, U))
    assert info.orthonormality_error == pytest.approx(3 * np.sqrt(2.0), rel=1e-15)  # one rounding of the sqrt
    with pytest.raises(ValueError, match="no new factors"):
        _ = replace(_some_step_info(), new_factors=()).orthonormality_error


def _some_step_info():
    Y = random_tucker((4, 3), (2, 2), np.random.default_rng(1))
    return tdlrt_step(Y, np.ones(Y.shape), 0.1, 0.1, diagnostics=False)[1]


def test_linear_projector_computes_each_projection_without_a_memo(rng):
    from refdlrt.nn.lowrank_layers import LowRankLinear

    layer = LowRankLinear(random_tucker((4, 6), (2, 2), rng))
    x, dy = rng.standard_normal((3, 6)), rng.standard_normal((3, 4))
    layer.forward(x)
    layer.backward(dy)
    P, A0 = layer.projector(), np.linalg.qr(rng.standard_normal((4, 3)))[0]
    for mats in ([A0, None], [None, layer.weight.factors[1]], [A0, layer.weight.factors[1]]):
        got = P.project(mats)
        want = dy.T @ x  # G, test-side
        want = want if mats[0] is None else mats[0].T @ want
        want = want if mats[1] is None else want @ mats[1]
        assert_close(got, want, np.float64)
    assert P._memo == []
