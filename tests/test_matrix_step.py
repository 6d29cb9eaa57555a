"""matrix_step (the d = 2 step without the K-steps' QRs, one SVD for the truncation) equals
tdlrt_step: the same ranks, the same weight, velocity and step numbers to the dtype's tolerance.
(The ranks can differ where τ = 0 and a singular value of C̃ sits at rounding level, ~1e-17 in
one decomposition and 0 in the other; the cases here have none.)"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import cast_tucker
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tucker_configs

import refdlrt.dlrt.matrix_step as ms
from refdlrt.backend import fro, to_numpy
from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.matrix_step import matrix_step
from refdlrt.dlrt.problems import random_quadratic, random_tucker
from refdlrt.nn.matrix_projectors import LowRankLinearProjector
from refdlrt.tensor.linalg import orthonormality_error
from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import tolerance


def assert_same_step(a, b, dtype):
    """Two (Tucker, StepInfo) results of one step agree: ranks exactly; the weight, the velocity
    (as the dense V' = v' x_i U_i') and ϑ, η, the HOSVD bound and ||grad_Ĉ|| to the dtype's
    tolerance, relative to the weight's (or the velocity's) size; the factors span the same
    spaces (the bases themselves may differ by signs and rotations)."""
    (Ya, ia), (Yb, ib) = a, b
    tol = tolerance(dtype)
    assert Ya.ranks == Yb.ranks
    assert ia.ranks_augmented == ib.ranks_augmented
    Wa, Wb = to_numpy(Ya.to_tensor()), to_numpy(Yb.to_tensor())
    scale = max(fro(Wa), 1.0)
    # float32: Û_i and the truncation round differently in the two routes (eps32 ~ 6e-8 each),
    # and the step is a handful of products: rtol of the table times the weight's norm
    assert fro(Wa - Wb) <= tol.rtol * scale, (fro(Wa - Wb), scale)
    for Ua, Ub in zip(Ya.factors, Yb.factors):
        Pa, Pb = to_numpy(Ua) @ to_numpy(Ua).T, to_numpy(Ub) @ to_numpy(Ub).T
        assert fro(Pa - Pb) <= tol.rtol * max(1.0, fro(Pa)) * 10  # span: a gap-dependent factor
    for x, y in ((ia.theta, ib.theta), (ia.truncation_error, ib.truncation_error),
                 (ia.truncation_bound, ib.truncation_bound), (ia.grad_core_norm, ib.grad_core_norm)):
        assert abs(x - y) <= tol.rtol * scale + tol.atol, (x, y)
    if ia.velocity is None or ib.velocity is None:
        assert ia.velocity is None and ib.velocity is None
    else:
        Va = to_numpy(Tucker(ia.velocity, Ya.factors).to_tensor())
        Vb = to_numpy(Tucker(ib.velocity, Yb.factors).to_tensor())
        assert fro(Va - Vb) <= tol.rtol * max(fro(Va), 1.0), (fro(Va - Vb), fro(Va))


@given(cfg=tucker_configs(d_values=(2,), max_n=7), tau=st.sampled_from([0.0, 1e-3, 0.1, 0.3]),
       lr=st.sampled_from([1e-3, 0.1, 0.7]), mu=st.sampled_from([0.0, 0.5]))
@settings(max_examples=40)
def test_matrix_step_equals_tdlrt_step_float64(xp, cfg, tau, lr, mu):
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng, xp=xp)
    G = random_quadratic(shape, rng, xp=xp).gradient(Y.to_tensor())
    v = xp.asarray(rng.standard_normal(ranks)) if mu else None
    kw = dict(momentum=mu, velocity=v)
    assert_same_step(matrix_step(Y, G, lr, tau, **kw),
                     tdlrt_step(Y, G, lr, tau, diagnostics=False, **kw), np.float64)


@pytest.mark.parametrize("shape, r, r_min, r_max", [
    ((120, 400), 20, 1, None),   # LeNet5's fc1 at its settled rank: r̂ = (40, 40)
    ((84, 120), 18, 1, None),
    ((5, 30), 3, 1, None),       # n_0 < 2 r: r̂ = (5, 6), a rectangular C̃
    ((30, 5), 3, 1, None),       # the other side shorter
    ((40, 60), 8, 12, None),     # r_min above the τ rule's rank
    ((40, 60), 8, 1, (3, 10)),   # per-mode caps: the compatible rank is their minimum
])
@pytest.mark.parametrize("mu", [0.0, 0.5])
def test_matrix_step_equals_tdlrt_step_float32_through_the_layer_projector(xp, shape, r, r_min, r_max, mu):
    """The training loop's case: float32, the linear layer's projector (G never formed), heavy ball."""
    rng = np.random.default_rng(7)
    n0, n1 = shape
    Y = random_tucker(shape, (r, r), rng, xp=xp)
    Y = cast_tucker(Tucker(Y.core + 3 * xp.eye(r), Y.factors), np.float32)
    x = xp.asarray(rng.standard_normal((64, n1)).astype(np.float32))
    dy = xp.asarray(0.1 * rng.standard_normal((64, n0)).astype(np.float32))
    v = xp.asarray(0.1 * rng.standard_normal((r, r)).astype(np.float32)) if mu else None

    def projector():
        U0, U1 = Y.factors
        return LowRankLinearProjector(x, x @ U1, dy, dy @ U0, Y.factors)

    kw = dict(r_min=r_min, r_max=r_max, momentum=mu, velocity=v)
    ours = matrix_step(Y, projector(), 0.05, 0.2, **kw)
    ref = tdlrt_step(Y, projector(), 0.05, 0.2, diagnostics=False, **kw)
    assert_same_step(ours, ref, np.float32)
    assert ours[0].core.dtype == np.float32
    for U in ours[0].factors:
        assert U.dtype == np.float32
        assert orthonormality_error(U) <= tolerance(np.float32).ortho * np.sqrt(U.shape[0])
    info = ours[1]
    assert info.grad_norm is None and info.normal_grad_norm is None and info.lift_error is None


def test_a_wide_spread_of_kept_singular_values_takes_the_hosvd_route(xp, monkeypatch):
    """float32 with σ_1 / σ_r > 1e3 among the kept values: Z = C̃^T P Σ^{-1} could lose float32
    accuracy, so the truncation is the HOSVD's (and still equals tdlrt_step's)."""
    rng = np.random.default_rng(3)
    n, r = 30, 4
    U0, U1 = (np.linalg.qr(rng.standard_normal((n, r)))[0] for _ in range(2))
    Y = cast_tucker(Tucker(xp.asarray(np.diag([1e3, 10.0, 1.0, 0.5])), (xp.asarray(U0), xp.asarray(U1))),
              np.float32)
    G = xp.asarray(1e-3 * rng.standard_normal((n, n)).astype(np.float32))
    calls, real = [], ms.truncate
    monkeypatch.setattr(ms, "truncate", lambda *a, **k: calls.append(1) or real(*a, **k))
    ours = matrix_step(Y, G, 0.01, 0.0)
    assert calls, "expected the HOSVD route"
    assert_same_step(ours, tdlrt_step(Y, G, 0.01, 0.0, diagnostics=False), np.float32)
    calls.clear()
    matrix_step(Y, G, 0.01, 0.3)  # τ = 0.3 keeps σ = 1e3 alone: one SVD suffices
    assert not calls


@pytest.mark.parametrize("seed", range(5))
def test_float32_factors_near_the_ratio_limit_are_as_orthonormal_as_the_hosvd_routes(xp, seed):
    """σ_1 / σ_r = 900 among the kept values, just under the 1e3 limit: Z_r = C̃^T P_r Σ_r^{-1}
    from P_r in float64 keeps U_1' as orthonormal as the HOSVD route's (measured 5.5e-7 for both;
    from a P_r rounded to float32 first, 1.6e-5)."""
    from refdlrt.dlrt.integrator import truncate

    rng = np.random.default_rng(seed)
    k, r = 40, 20
    P, Z = (np.linalg.qr(rng.standard_normal((k, k)))[0] for _ in range(2))
    sigma = np.concatenate([np.geomspace(1.0, 1 / 900, r), np.full(k - r, 1e-6)])
    C = xp.asarray(((P * sigma) @ Z.T).astype(np.float32))
    eye = xp.eye(k, dtype=np.float32)
    ours, _, _, _ = ms.truncate_matrix(C, (eye, eye), 1e-5, 1, (k, k))
    ref, _, _ = truncate(C, (eye, eye), 1e-5, r_min=[1, 1], r_max=[k, k])
    assert ours.ranks == ref.ranks == (r, r)
    worst_ref = max(orthonormality_error(U) for U in ref.factors)
    for U in ours.factors:
        assert orthonormality_error(U) <= 3 * worst_ref  # a factor 3 of float32 rounding


def test_the_pin_catches_a_planted_bug(xp, monkeypatch):
    """Test the tester: a step whose augmentation drops the old basis is caught."""
    from refdlrt.tensor.linalg import orth

    rng = np.random.default_rng(5)
    Y = random_tucker((9, 8), (3, 3), rng, xp=xp)
    G = random_quadratic(Y.shape, rng, xp=xp).gradient(Y.to_tensor())
    ref = tdlrt_step(Y, G, 0.3, 0.0, diagnostics=False)
    monkeypatch.setattr(ms, "augment", lambda K, U, direction=None: (lambda Uh: (Uh, Uh.T @ U))(orth(direction)))
    with pytest.raises(AssertionError):
        assert_same_step(matrix_step(Y, G, 0.3, 0.0), ref, np.float64)


def test_the_pin_catches_a_wrong_velocity(xp, monkeypatch):
    """Test the tester: a velocity left in the old bases (no transport) is caught."""
    rng = np.random.default_rng(6)
    Y = random_tucker((9, 8), (3, 3), rng, xp=xp)
    G = random_quadratic(Y.shape, rng, xp=xp).gradient(Y.to_tensor())
    v = xp.asarray(rng.standard_normal((3, 3)))
    ref = tdlrt_step(Y, G, 0.3, 0.1, diagnostics=False, momentum=0.5, velocity=v)
    monkeypatch.setattr(ms, "transport_velocity", lambda grad_C, U_hats, new: grad_C[:new[0].shape[1], :new[1].shape[1]])
    with pytest.raises(AssertionError):
        assert_same_step(matrix_step(Y, G, 0.3, 0.1, momentum=0.5, velocity=v), ref, np.float64)


def test_bad_inputs_are_refused(xp):
    rng = np.random.default_rng(1)
    Y3 = random_tucker((4, 4, 4), (2, 2, 2), rng, xp=xp)
    with pytest.raises(ValueError, match="d = 2"):
        matrix_step(Y3, xp.zeros(Y3.shape), 0.1, 0.1)
    Y = random_tucker((6, 5), (3, 2), rng, xp=xp)  # incompatible ranks: a 3 x 2 core
    with pytest.raises(ValueError, match="square core"):
        matrix_step(Y, xp.zeros(Y.shape), 0.1, 0.1)
    Y = random_tucker((6, 5), (2, 2), rng, xp=xp)
    with pytest.raises(ValueError, match="lr"):
        matrix_step(Y, xp.zeros(Y.shape), -0.1, 0.1)
    with pytest.raises(ValueError, match="velocity"):
        matrix_step(Y, xp.zeros(Y.shape), 0.1, 0.1, momentum=0.5, velocity=xp.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        matrix_step(Y, xp.zeros((5, 6)), 0.1, 0.1)
    with pytest.raises(FloatingPointError):
        matrix_step(Y, xp.full(Y.shape, np.nan), 0.1, 0.1)
    bent = Tucker(Y.core, (Y.factors[0] * 1.01, Y.factors[1]))  # not orthonormal
    with pytest.raises(ValueError, match="matrix_step: Y: factor 0"):
        matrix_step(bent, xp.zeros(Y.shape), 0.1, 0.1)
