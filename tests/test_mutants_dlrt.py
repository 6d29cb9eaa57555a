"""Tests that kill mutmut survivors in refdlrt/dlrt (integrator, projector, reference).

Mutants killed (mutmut 3.8.1 names ``refdlrt.dlrt.<module>.x_<function>__mutmut_<n>``; the run
was partial, see tests/README.md): integrator k_gradient 3, 7, 27; k_step 14; augment 2-5;
s_step 3, 7, 12, 15, 16; truncate 1, 11, 16, 18; _rank_bounds 2; _check_step_args 3, 6;
_adaptive_modes 7, 11, 12, 16; basis_update 24; _fixed_rank_basis 4-6; _truncate_adaptive 11,
13; _step_info 31, 32, 33, 66, 71; projector DenseGradient.project 2, MomentumGradient.norm 34.

Expectations come from the docstrings (messages, the meaning of each StepInfo field) and from
dense computations written here (‖G + μ v ×_i U_i‖ formed explicitly).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import ForeignArray

from refdlrt.dlrt.integrator import augment, k_gradient, k_step, s_step, tdlrt_step, truncate
from refdlrt.dlrt.projector import DenseGradient, MomentumGradient
from refdlrt.tensor.tucker import Tucker, multi_mode_product

TOL64 = 1e-10  # float64 comparisons of a few hundred flops (table rtol, refdlrt.tolerances)


def _exact(msg: str) -> str:
    return "^" + re.escape(msg) + "$"


def _orth(rng, n, r):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def _tucker(shape=(5, 4, 3), ranks=(2, 2, 2), seed=0):
    rng = np.random.default_rng(seed)
    return Tucker(rng.standard_normal(ranks), tuple(_orth(rng, n, r) for n, r in zip(shape, ranks)))


class _NoNorm:
    """A projector that cannot tell its norm (only project)."""

    def __init__(self, G):
        self._d = DenseGradient(G)

    def project(self, mats):
        return self._d.project(mats)


def test_dense_gradient_is_accepted_by_k_gradient_and_s_step_with_n_not_r():
    # n_i != r_i, so the expected dense shape must be (n_i), not (r_i)
    Y = _tucker()
    G = np.random.default_rng(1).standard_normal(Y.shape)
    K1, gK1 = k_gradient(Y.core, Y.factors, 0, G)
    K2, gK2 = k_gradient(Y.core, Y.factors, 0, DenseGradient(G))
    np.testing.assert_allclose(gK1, gK2, rtol=TOL64)
    C1, g1 = s_step(Y.core, Y.factors, G, 0.1)
    C2, g2 = s_step(Y.core, Y.factors, DenseGradient(G), 0.1)
    np.testing.assert_allclose(g1, g2, rtol=TOL64)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_non_finite_messages_name_the_quantity():
    Y = _tucker()
    G = np.zeros(Y.shape)
    G[0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=_exact(
            "the K-gradient of mode 0 contains NaN or Inf; refusing to produce NaN factors")):
        k_gradient(Y.core, Y.factors, 0, G)
    with pytest.raises(FloatingPointError, match=_exact(
            "the core gradient contains NaN or Inf; refusing to produce NaN factors")):
        s_step(Y.core, Y.factors, G, 0.1)
    G = np.ones(Y.shape)  # finite gradient, but lr * grad_K overflows to inf
    with pytest.raises(FloatingPointError, match=_exact(
            "K_0 after the step contains NaN or Inf; refusing to produce NaN factors")):
        k_step(Y.core, Y.factors, 0, G, 1e308)


def test_augment_rejects_mixed_backends():
    K = np.ones((4, 2))
    with pytest.raises(TypeError, match="mix array libraries"):
        augment(K, ForeignArray(np.ones((4, 2))))


def test_truncate_defaults_to_r_min_one_and_makes_ranks_compatible():
    rng = np.random.default_rng(3)
    C = rng.standard_normal((4, 4, 4))
    Us = tuple(_orth(rng, 6, 4) for _ in range(3))
    Y, _, _ = truncate(C, Us, 10.0)  # τ ≥ 1: every rank drops to the default r_min = 1
    assert Y.ranks == (1, 1, 1)
    # r_min per mode (4, 1, 1): the τ rule gives (4, 1, 1), incompatible (4 > 1 * 1); the
    # documented result is the compatible (1, 1, 1) and Y stays a valid orthonormal Tucker
    Y, _, eta = truncate(C, Us, 10.0, r_min=(4, 1, 1))
    assert Y.ranks == (1, 1, 1) and Y.core.shape == (1, 1, 1)
    # η = ‖Ĉ ×_i Û_i − Y_new‖_F (orthonormal Û_i), computed densely here
    dense = multi_mode_product(C, Us)
    assert eta == pytest.approx(np.linalg.norm(dense - Y.to_tensor()), rel=TOL64)


def test_step_argument_messages():
    Y = _tucker()
    G = np.zeros(Y.shape)
    with pytest.raises(TypeError, match=_exact("Y: expected a Tucker tensor, got str")):
        tdlrt_step("Y", G, 0.1, 0.1)
    Y1 = Tucker(np.ones(2), (np.eye(3)[:, :2],))
    with pytest.raises(ValueError, match=_exact(
            "Y: expected a Tucker tensor of order d >= 2, got d = 1")):
        tdlrt_step(Y1, np.zeros(3), 0.1, 0.1)
    with pytest.raises(ValueError, match=_exact("r_min: expected an int >= 1, got 0")):
        tdlrt_step(Y, G, 0.1, 0.1, r_min=0)
    with pytest.raises(ValueError, match=_exact(
            "adaptive_modes: expected modes in 0..2, got [0, 5]")):
        tdlrt_step(Y, G, 0.1, 0.1, adaptive_modes=[0, 5])


def test_adaptive_modes_all_equals_default_and_subset_adapts_only_those():
    Y = _tucker(shape=(6, 6, 6))
    G = np.random.default_rng(2).standard_normal(Y.shape)
    Ya, ia = tdlrt_step(Y, G, 0.1, 0.0)
    Yb, ib = tdlrt_step(Y, G, 0.1, 0.0, adaptive_modes=range(3))
    assert ia.ranks_augmented == ib.ranks_augmented == (4, 4, 4)  # 2 r_i, generic G
    np.testing.assert_allclose(Ya.to_tensor(), Yb.to_tensor(), rtol=TOL64, atol=TOL64)
    _, ic = tdlrt_step(Y, G, 0.1, 0.0, adaptive_modes=[0])
    assert ic.ranks_augmented == (4, 2, 2)


def test_fixed_rank_message_and_info():
    Y = _tucker(shape=(4, 2, 2), ranks=(3, 1, 1))  # r_0 = 3 > r_1 r_2 = 1
    with pytest.raises(ValueError, match=_exact(
            "fixed-rank mode 0: rank r=3 exceeds the product of the other ranks 1; the core "
            "unfolding cannot have full row rank")):
        tdlrt_step(Y, np.zeros(Y.shape), 0.1, 0.1, fixed_rank=True)
    Y = _tucker()
    _, info = tdlrt_step(Y, np.ones(Y.shape), 0.1, 0.5, fixed_rank=True)
    # nothing is truncated at fixed rank: ϑ and the bound are 0 (StepInfo docstring)
    assert info.theta == 0.0 and info.truncation_bound == 0.0 and info.truncation_error == 0.0


def test_step_info_fields_without_diagnostics():
    Y = _tucker()
    G = np.random.default_rng(4).standard_normal(Y.shape)
    _, info = tdlrt_step(Y, G, 0.1, 0.1, diagnostics=False)
    assert info.ranks_before == Y.ranks
    assert info.grad_old_core_norm is None and info.lift_error is None
    _, info = tdlrt_step(Y, _NoNorm(G), 0.1, 0.1)
    assert info.grad_norm is None and info.normal_grad_norm is None


def test_normal_gradient_norm_is_zero_when_nothing_is_outside():
    # full rank (r_i = n_i): the augmented space is everything, so ||(I - P) G|| = 0; without
    # diagnostics it is (||G||² - ||grad_C||²)^{1/2}, accurate to ~1e-8 ||G|| (docstring)
    rng = np.random.default_rng(5)
    Y = Tucker(rng.standard_normal((3, 3, 3)), tuple(_orth(rng, 3, 3) for _ in range(3)))
    G = 0.1 * rng.standard_normal(Y.shape)
    _, info = tdlrt_step(Y, G, 0.1, 0.0, diagnostics=False)
    assert info.normal_grad_norm <= 1e-6 * np.linalg.norm(G)  # 100x the documented accuracy


def test_dense_gradient_project_message():
    with pytest.raises(ValueError, match=_exact(
            "project: expected 2 matrices (one per mode), got 1")):
        DenseGradient(np.zeros((3, 4))).project([None])


def test_momentum_norm_of_a_small_direction():
    # ||G + μ V||, V = v ×_i U_i formed densely here; a norm below 1 (the mutant's floor)
    rng = np.random.default_rng(6)
    Us = (_orth(rng, 5, 2), _orth(rng, 4, 3))
    v = 0.01 * rng.standard_normal((2, 3))
    G = 0.01 * rng.standard_normal((5, 4))
    mu = 0.9
    want = np.linalg.norm(G + mu * Us[0] @ v @ Us[1].T)
    got = MomentumGradient(DenseGradient(G), v, Us, mu).norm()
    assert got == pytest.approx(want, rel=1e-8)  # the ||.||² identity loses ~half the digits
