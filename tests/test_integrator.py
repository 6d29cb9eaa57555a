"""The TDLRT integrator (issue 4): the properties ALGORITHM.md §2 and §4 guarantee."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tucker_configs

from refdlrt.backend import to_numpy
from refdlrt.dlrt.integrator import augment, k_step, tdlrt_step
from refdlrt.dlrt.problems import LinearProblem, TargetProblem, random_quadratic, random_tucker
from refdlrt.dlrt.projector import DenseGradient
from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import tolerance

TOL = tolerance(np.float64)


def dense(Y):
    return to_numpy(Y.to_tensor())


def fro(a):
    return float(np.linalg.norm(np.asarray(to_numpy(a)).ravel()))


def project_all(T, Us):
    """T x_i U_i^T over all modes, written with einsum-free loops of tensordot (test-side)."""
    out = np.asarray(to_numpy(T))
    for i, U in enumerate(Us):
        out = np.moveaxis(np.tensordot(np.asarray(to_numpy(U)).T, out, axes=([1], [i])), 0, i)
    return out


def expand_all(C, Us):
    out = np.asarray(to_numpy(C))
    for i, U in enumerate(Us):
        out = np.moveaxis(np.tensordot(np.asarray(to_numpy(U)), out, axes=([1], [i])), 0, i)
    return out


def setup(xp, cfg, *, L=1.0):
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng, xp=xp)
    prob = random_quadratic(shape, rng, L=L, xp=xp)
    return Y, prob


# --- orthonormality and lift -------------------------------------------------------------


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 1e-3, 0.05, 0.2]))
@settings(max_examples=15)
def test_factors_stay_orthonormal_and_lift_is_exact_over_many_steps(xp, cfg, tau):
    Y, prob = setup(xp, cfg)
    for _ in range(25):
        Y_new, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), 0.5, tau)
        # ortho tolerance is per unit of sqrt(n): ||U^T U - I||_F grows like sqrt(r) eps
        assert info.orthonormality_error <= TOL.ortho * math.sqrt(max(Y.shape))
        for U in Y_new.factors:
            Un = to_numpy(U)
            assert fro(Un.T @ Un - np.eye(Un.shape[1])) <= TOL.ortho * math.sqrt(max(Y.shape))
        assert info.lift_error <= TOL.rtol * max(fro(Y.core), 1.0)
        Y = Y_new


# --- tau = 0: the step is the Galerkin projection of the gradient step --------------------


@given(cfg=tucker_configs())
def test_tau_zero_step_is_projected_gradient_step(xp, cfg):
    Y, prob = setup(xp, cfg)
    G = prob.gradient(Y.to_tensor())
    lr = 0.3
    Y_new, info = tdlrt_step(Y, G, lr, 0.0)
    # generic data: nothing is numerically zero, so only the unfolding size caps the rank
    ra = info.ranks_augmented
    assert info.ranks_after == tuple(min(r, math.prod(ra) // r) for r in ra)
    # With tau = 0 the new bases span range(Û_i), so Y_new = Y - lr G x_i Û_i Û_i^T means:
    # Y_new lies in span(U_i') and the residual Y_new - Y + lr G is orthogonal to it.
    Us = [to_numpy(U) for U in Y_new.factors]
    Yn = dense(Y_new)
    expected = expand_all(project_all(dense(Y) - lr * to_numpy(G), Us), Us)
    np.testing.assert_allclose(Yn, expected, rtol=TOL.rtol, atol=TOL.atol * max(fro(Yn), 1))
    # ||grad_Ĉ L|| is the norm of the projection of G on the augmented space, which equals
    # span(U_i') unless the unfolding size capped a rank (then span(U_i') is a subspace)
    proj_norm = fro(project_all(to_numpy(G), Us))
    if info.ranks_after == ra:
        assert info.grad_core_norm == pytest.approx(proj_norm, rel=TOL.rtol)
    else:
        assert info.grad_core_norm >= proj_norm * (1 - TOL.rtol)


# --- truncation bound, descent ----------------------------------------------------------


@given(cfg=tucker_configs(), tau=st.sampled_from([0.01, 0.1, 0.3]))
def test_truncation_error_within_hosvd_bound_and_sqrt_d_theta(xp, cfg, tau):
    Y, prob = setup(xp, cfg)
    G = prob.gradient(Y.to_tensor())
    Y_full, _ = tdlrt_step(Y, G, 0.5, 0.0)  # Ỹ: the same step without truncation
    Y_new, info = tdlrt_step(Y, G, 0.5, tau)
    eta = fro(dense(Y_full) - dense(Y_new))
    assert info.truncation_error == pytest.approx(eta, rel=1e-8, abs=TOL.atol * 10)  # two routes, rounding
    assert info.truncation_error <= info.truncation_bound * (1 + TOL.rtol) + TOL.atol
    assert info.truncation_bound <= math.sqrt(Y.ndim) * info.theta * (1 + TOL.rtol) + TOL.atol


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 0.05, 0.2]), frac=st.sampled_from([0.25, 0.6, 1.0]))
@settings(max_examples=20)
def test_descent_inequality_every_step_on_random_quadratics(xp, cfg, tau, frac):
    Y, prob = setup(xp, cfg, L=2.0)
    L = prob.smoothness
    lr = frac / L  # λ <= 1/L
    for _ in range(8):
        W = Y.to_tensor()
        G = prob.gradient(W)
        Y_tilde, _ = tdlrt_step(Y, G, lr, 0.0)
        Y_new, info = tdlrt_step(Y, G, lr, tau)
        eta = info.truncation_error
        grad_tilde = fro(prob.gradient(Y_tilde.to_tensor()))
        bound = (
            prob.value(W)
            - lr * (1 - L * lr / 2) * info.grad_core_norm**2
            + grad_tilde * eta
            + L / 2 * eta**2
        )
        lhs = prob.value(Y_new.to_tensor())
        assert lhs <= bound + TOL.rtol * max(abs(bound), 1.0)
        assert info.grad_core_norm >= info.grad_old_core_norm * (1 - TOL.rtol)
        Y = Y_new


# --- exactness --------------------------------------------------------------------------


def _curve(shape, ranks, rng):
    """A(t) = C(t) x_i U_i(t) with U_i(t) = qr(U_i + t V_i), C(t) = C + t D: Tucker rank fixed."""
    U0 = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
    V = [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    C0, D = rng.standard_normal(ranks) + 3.0, rng.standard_normal(ranks)

    def A(t):
        Us = [np.linalg.qr(U + t * Vi)[0] for U, Vi in zip(U0, V)]
        return C0 + t * D, Us

    return A


@given(cfg=tucker_configs(), fixed=st.booleans())
def test_exactness_for_constant_gradient_along_fixed_rank_curve(xp, cfg, fixed):
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    A = _curve(shape, ranks, rng)
    lr, t0, t1 = 0.7, 0.0, 0.3
    C0, U0 = A(t0)
    C1, U1 = A(t1)
    A0, A1 = expand_all(C0, U0), expand_all(C1, U1)
    G = LinearProblem(xp.asarray(-(A1 - A0) / lr)).gradient(None)
    Y0 = Tucker(xp.asarray(C0), tuple(xp.asarray(U) for U in U0))
    Y1, info = tdlrt_step(Y0, G, lr, 1e-12, fixed_rank=fixed)
    np.testing.assert_allclose(dense(Y1), A1, rtol=0, atol=1e-9 * fro(A1))  # exact up to conditioning
    assert info.ranks_after == tuple(ranks)


# --- basis independence ------------------------------------------------------------------


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 0.1]))
def test_rotated_representation_gives_the_same_tensor(xp, cfg, tau):
    Y, prob = setup(xp, cfg)
    rng = np.random.default_rng(cfg[2] + 1)
    Os = [np.linalg.qr(rng.standard_normal((r, r)))[0] for r in Y.ranks]
    core = expand_all(to_numpy(Y.core), [O.T for O in Os])
    Yr = Tucker(xp.asarray(core), tuple(U @ xp.asarray(O) for U, O in zip(Y.factors, Os)))
    np.testing.assert_allclose(dense(Yr), dense(Y), atol=TOL.atol * 10)
    G = prob.gradient(Y.to_tensor())
    A, ia = tdlrt_step(Y, G, 0.4, tau)
    B, ib = tdlrt_step(Yr, G, 0.4, tau)
    assert ia.ranks_after == ib.ranks_after
    np.testing.assert_allclose(dense(A), dense(B), rtol=1e-8, atol=1e-9 * max(fro(dense(A)), 1))  # rounding of two QRs/SVDs


# --- d = 2 against an independent matrix BUG ---------------------------------------------


def matrix_bug_step(U, S, V, G, lr, tau):
    """Rank-adaptive matrix BUG (Ceruti, Kusch, Lubich 2022), written independently."""

    def basis(A):
        Q, s, _ = np.linalg.svd(A, full_matrices=False)
        return Q[:, : int((s > 1e-12 * s[0]).sum())]  # numerical rank of [K | U]

    K = U @ S - lr * G @ V  # K-step
    Lm = V @ S.T - lr * G.T @ U  # L-step
    Uh, Vh = basis(np.hstack([K, U])), basis(np.hstack([Lm, V]))
    Sh = (Uh.T @ U) @ S @ (V.T @ Vh) - lr * Uh.T @ G @ Vh  # S-step
    P, sig, Qt = np.linalg.svd(Sh)
    theta = tau * np.linalg.norm(Sh)
    tails = np.sqrt(np.concatenate([np.cumsum((sig**2)[::-1])[::-1], [0.0]]))
    r = int(np.argmax(tails <= theta))
    r = max(r, 1)
    return Uh @ P[:, :r], np.diag(sig[:r]), Vh @ Qt[:r].T


@given(n=st.tuples(st.integers(3, 8), st.integers(3, 8)), r=st.integers(1, 3),
       tau=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**32 - 1))
def test_matrix_case_matches_independent_matrix_bug(xp, n, r, tau, seed):
    rng = np.random.default_rng(seed)
    Y = random_tucker(n, (r, r), rng)
    prob = random_quadratic(n, rng)
    U, V, S = (to_numpy(a) for a in (Y.factors[0], Y.factors[1], Y.core))
    Yx = Tucker(xp.asarray(S), (xp.asarray(U), xp.asarray(V)))
    for _ in range(5):
        G = prob.gradient(U @ S @ V.T)
        Yx, _ = tdlrt_step(Yx, xp.asarray(G), 0.4, tau)
        U, S, V = matrix_bug_step(U, S, V, G, 0.4, tau)
        np.testing.assert_allclose(dense(Yx), U @ S @ V.T, rtol=1e-9, atol=1e-10)  # 5 steps of rounding
        U, V, S = (to_numpy(a) for a in (Yx.factors[0], Yx.factors[1], Yx.core))


# --- projector form == dense form --------------------------------------------------------


class EinsumProjector:
    """A projector that computes G x_i A_i^T by its own route (einsum), not DenseGradient."""

    def __init__(self, G):
        # not ``self.G``: tdlrt_step treats an object with a ``G`` as a dense gradient and
        # checks its backend against Y's (this one keeps a NumPy copy)
        self.G_host = to_numpy(G)
        self.xp_like = G

    def project(self, mats):
        from refdlrt.backend import get_xp

        out = self.G_host
        for i, A in enumerate(mats):
            if A is None:
                continue
            A = to_numpy(A)
            letters = "abcdefgh"[: out.ndim]
            spec = f"{letters},{letters[i]}z->" + letters.replace(letters[i], "z")
            out = np.einsum(spec, out, A)
        return get_xp(self.xp_like).asarray(out)


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 0.1]))
def test_projector_and_dense_gradient_agree(xp, cfg, tau):
    Y, prob = setup(xp, cfg)
    G = prob.gradient(Y.to_tensor())
    A, ia = tdlrt_step(Y, G, 0.5, tau)
    B, ib = tdlrt_step(Y, EinsumProjector(G), 0.5, tau)
    assert ia.ranks_after == ib.ranks_after
    np.testing.assert_allclose(dense(A), dense(B), rtol=1e-9, atol=1e-10)  # summation order only
    assert ib.grad_norm is None and ia.grad_norm == pytest.approx(fro(G))


# --- rank adaptivity ---------------------------------------------------------------------


@pytest.mark.parametrize("target_ranks", [(2, 3, 2), (1, 2, 2), (3, 3, 3)])
def test_gradient_flow_to_low_rank_target_finds_its_rank(xp, target_ranks):
    rng = np.random.default_rng(7)
    shape = (6, 6, 6)
    T = random_tucker(shape, target_ranks, rng, xp=xp)
    # well-conditioned target core: its unfoldings' singular values are O(1) above the cut
    prob = TargetProblem(T.to_tensor())
    Y = random_tucker(shape, (5, 5, 5), rng, xp=xp, core_scale=0.3)
    for _ in range(60):
        Y, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), 0.5, 0.02)
    assert Y.ranks == target_ranks
    assert prob.value(Y.to_tensor()) < 1e-4 * prob.value(xp.zeros(shape))


# --- variants ----------------------------------------------------------------------------


@given(cfg=tucker_configs())
def test_fixed_rank_keeps_ranks_and_adaptive_modes_respected(xp, cfg):
    Y, prob = setup(xp, cfg)
    G = prob.gradient(Y.to_tensor())
    Yf, info = tdlrt_step(Y, G, 0.5, 0.5, fixed_rank=True)
    assert Yf.ranks == Y.ranks and info.truncation_error == 0.0
    Ya, info = tdlrt_step(Y, G, 0.5, 0.3, adaptive_modes=[0])
    # non-adaptive modes keep their rank, unless the other ranks no longer allow it
    for i in range(1, Y.ndim):
        other = math.prod(Ya.ranks) // Ya.ranks[i]
        assert Ya.ranks[i] == min(Y.ranks[i], other)


@given(cfg=tucker_configs())
def test_zero_gradient_with_tau_zero_is_identity(xp, cfg):
    Y, _ = setup(xp, cfg)
    Y_new, info = tdlrt_step(Y, xp.zeros(Y.shape), 0.5, 0.0)
    np.testing.assert_allclose(dense(Y_new), dense(Y), rtol=TOL.rtol, atol=TOL.atol * 10)
    assert info.ranks_augmented == Y.ranks  # [K | U] has the range of U


def test_zero_gradient_with_tau_only_truncates(xp):
    rng = np.random.default_rng(3)
    Y = random_tucker((5, 5, 5), (3, 3, 3), rng, xp=xp)
    # make the core's last slice in mode 0 tiny: truncation must remove exactly that
    core = to_numpy(Y.core).copy()
    Q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    core = np.moveaxis(np.tensordot(Q, core, axes=([1], [0])), 0, 0)
    Y = Tucker(xp.asarray(core), Y.factors)
    Y_new, info = tdlrt_step(Y, xp.zeros(Y.shape), 0.5, 0.2)
    assert info.truncation_error <= info.truncation_bound + TOL.atol
    np.testing.assert_allclose(fro(dense(Y_new) - dense(Y)), info.truncation_error, rtol=1e-8, atol=1e-12)  # two routes


def test_augmented_width_is_capped_at_n(xp):
    rng = np.random.default_rng(1)
    Y = random_tucker((3, 4, 5), (2, 3, 3), rng, xp=xp)
    prob = random_quadratic(Y.shape, rng, xp=xp)
    _, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), 0.5, 0.0)
    assert info.ranks_augmented == (3, 4, 5)  # min(2 r_i, n_i)


def test_rank_deficient_augmentation_gives_basis_of_exactly_the_range(xp):
    rng = np.random.default_rng(2)
    n, r = 8, 3
    U = xp.asarray(np.linalg.qr(rng.standard_normal((n, r)))[0])
    v = rng.standard_normal((n, 1))
    # K = U B + v w^T: range([K | U]) = range(U) + span(v): dimension r + 1
    K = U @ xp.asarray(rng.standard_normal((r, r))) + xp.asarray(v @ rng.standard_normal((1, r)))
    U_hat, M_hat = augment(K, U)
    assert U_hat.shape == (n, r + 1)
    Uh = to_numpy(U_hat)
    assert np.linalg.matrix_rank(np.hstack([to_numpy(K), to_numpy(U)])) == r + 1
    res = np.hstack([to_numpy(K), to_numpy(U)]) - Uh @ (Uh.T @ np.hstack([to_numpy(K), to_numpy(U)]))
    assert fro(res) <= TOL.rtol * fro(to_numpy(K))
    np.testing.assert_allclose(Uh.T @ Uh, np.eye(r + 1), atol=TOL.ortho * math.sqrt(n))


def test_k_step_gradient_matches_finite_differences():
    """grad_{K_i} L from k_step equals the derivative of K -> L(Ten_i(K Q^T) x_{j≠i} U_j)."""
    from refdlrt.tensor.linalg import qr_signfixed
    from refdlrt.tensor.tucker import fold, unfold

    rng = np.random.default_rng(5)
    Y = random_tucker((4, 5, 3), (2, 3, 2), rng)
    prob = random_quadratic(Y.shape, rng)
    G = DenseGradient(prob.gradient(Y.to_tensor()))
    i, lr = 1, 1.0
    Q, R = qr_signfixed(unfold(Y.core, i).T)
    K0 = Y.factors[i] @ R.T
    K1, gK_returned = k_step(Y.core, Y.factors, i, G, lr)
    gK = (K0 - K1) / lr
    np.testing.assert_allclose(gK, gK_returned, rtol=1e-12, atol=1e-14)  # rounding of K0 - λ gK

    def loss_of_K(K):
        core_like = fold(Q.T, i, (Y.ranks[0], K.shape[1], Y.ranks[2]))  # Ten_i(Q^T)
        mats = [U if j != i else K for j, U in enumerate(Y.factors)]
        return prob.value(expand_all(core_like, mats))

    t = rng.standard_normal(K0.shape)
    eps = TOL.fd_eps
    fd = (loss_of_K(K0 + eps * t) - loss_of_K(K0 - eps * t)) / (2 * eps)
    assert fd == pytest.approx(float((gK * t).sum()), rel=TOL.fd_rtol)


# --- bad input ---------------------------------------------------------------------------


@pytest.fixture
def simple():
    rng = np.random.default_rng(0)
    Y = random_tucker((4, 4, 4), (2, 2, 2), rng)
    return Y, rng.standard_normal(Y.shape)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(lr=0.0), ValueError, "lr > 0"),
        (dict(lr=-1.0), ValueError, "lr > 0"),
        (dict(lr=float("nan")), ValueError, "finite"),
        (dict(lr=float("inf")), ValueError, "finite"),
        (dict(tau=-0.1), ValueError, "tau >= 0"),
        (dict(tau=float("nan")), ValueError, "finite"),
        (dict(r_min=3, r_max=2), ValueError, "r_min > r_max"),
        (dict(r_min=0), ValueError, "r_min"),
        (dict(r_max=(2, 2)), ValueError, "one per mode"),
        (dict(adaptive_modes=[5]), ValueError, "adaptive_modes"),
    ],
)
def test_bad_arguments_raise(simple, kwargs, exc, match):
    Y, G = simple
    args = dict(lr=0.1, tau=0.1) | kwargs
    lr, tau = args.pop("lr"), args.pop("tau")
    with pytest.raises(exc, match=match):
        tdlrt_step(Y, G, lr, tau, **args)


def test_bad_gradient_and_tensor_raise(simple):
    Y, G = simple
    with pytest.raises(ValueError, match=r"expected shape \(4, 4, 4\)"):
        tdlrt_step(Y, G[:3], 0.1, 0.1)
    for bad in (np.nan, np.inf):
        Gb = G.copy()
        Gb[1, 2, 3] = bad
        with pytest.raises(FloatingPointError, match="NaN or Inf"):
            tdlrt_step(Y, Gb, 0.1, 0.1)
    with pytest.raises(TypeError, match="Tucker"):
        tdlrt_step(G, G, 0.1, 0.1)
    big = Tucker(np.ones((5, 2, 2)), (np.ones((4, 5)), np.eye(4)[:, :2], np.eye(4)[:, :2]))
    with pytest.raises(ValueError, match="exceeds the dimension"):
        tdlrt_step(big, G, 0.1, 0.1)


def test_nan_from_a_projector_raises(simple):
    Y, G = simple

    class NaNProjector:
        def project(self, mats):
            return DenseGradient(np.full(Y.shape, np.nan)).project(mats)

    with pytest.raises(FloatingPointError, match="NaN or Inf"):
        tdlrt_step(Y, NaNProjector(), 0.1, 0.1)


def test_rank_bounds_are_respected(xp):
    rng = np.random.default_rng(4)
    Y = random_tucker((6, 6, 6), (3, 3, 3), rng, xp=xp)
    prob = random_quadratic(Y.shape, rng, xp=xp)
    G = prob.gradient(Y.to_tensor())
    Ylo, _ = tdlrt_step(Y, G, 0.5, 0.99, r_min=2)
    assert Ylo.ranks == (2, 2, 2)
    Yhi, _ = tdlrt_step(Y, G, 0.5, 0.0, r_max=(4, 5, 6))
    assert Yhi.ranks == (4, 5, 6)


# --- momentum ----------------------------------------------------------------------------


def test_momentum_step_is_the_step_along_g_plus_mu_v(xp):
    """With momentum, the step equals a plain step with the dense direction G + μ V
    (V = v x_i U_i), and the new velocity is that direction projected on the new bases."""
    rng = np.random.default_rng(11)
    Y = random_tucker((5, 4, 3), (2, 2, 2), rng, xp=xp)
    prob = random_quadratic(Y.shape, rng, xp=xp)
    v = xp.asarray(rng.standard_normal(Y.ranks))
    G = prob.gradient(Y.to_tensor())
    mu, lr, tau = 0.9, 0.2, 0.1
    Y1, info = tdlrt_step(Y, G, lr, tau, momentum=mu, velocity=v)
    V = expand_all(to_numpy(v), [to_numpy(U) for U in Y.factors])
    G_eff = xp.asarray(to_numpy(G) + mu * V)
    Y2, info2 = tdlrt_step(Y, G_eff, lr, tau)
    np.testing.assert_allclose(dense(Y1), dense(Y2), rtol=1e-9, atol=1e-10)  # two routes, rounding
    # the diagnostics are those of the direction G + μV (its norm computed without forming V)
    assert info.grad_norm == pytest.approx(fro(G_eff), rel=1e-12)
    for name in ("grad_core_norm", "grad_old_core_norm", "normal_grad_norm"):
        # normal_grad_norm: direct route vs (||D||² - ||grad_Ĉ||²)^{1/2}, ~1e-8 relative
        assert getattr(info, name) == pytest.approx(getattr(info2, name), rel=1e-6), name
    assert info.velocity.shape == Y1.ranks
    # new velocity = P'(P̂ G_eff); P̂ from the untruncated step, P' from the new bases
    Y0, _ = tdlrt_step(Y, G_eff, lr, 0.0)
    Uh = [to_numpy(U) for U in Y0.factors]
    Un = [to_numpy(U) for U in Y1.factors]
    v_hat = expand_all(project_all(to_numpy(G_eff), Uh), Uh)
    np.testing.assert_allclose(
        expand_all(to_numpy(info.velocity), Un), expand_all(project_all(v_hat, Un), Un),
        rtol=1e-9, atol=1e-10,  # a few products of rounding
    )
    # first step (no velocity yet): a plain step, and the velocity is the projected gradient
    Y3, i3 = tdlrt_step(Y, G, lr, tau, momentum=mu)
    Y4, _ = tdlrt_step(Y, G, lr, tau)
    np.testing.assert_array_equal(dense(Y3), dense(Y4))
    assert i3.velocity is not None


@pytest.mark.parametrize("fixed_rank", [True, False])
def test_momentum_at_full_rank_is_heavy_ball(xp, fixed_rank):
    """With square factors (r_i = n_i) the low-rank velocity holds all of G + μV, so a run of
    momentum steps is dense heavy ball, v <- μ v + G, W <- W - λ v, to rounding."""
    rng = np.random.default_rng(12)
    shape = (4, 3, 3, 2)
    prob = random_quadratic(shape, rng, xp=xp)
    W0 = xp.asarray(rng.standard_normal(shape))
    Y = Tucker(W0, tuple(xp.eye(n) for n in shape))
    W, v, velocity, lr, mu = W0, 0.0, None, 0.1, 0.9
    for _ in range(6):
        Y, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), lr, 0.0, fixed_rank=fixed_rank,
                             momentum=mu, velocity=velocity)
        velocity = info.velocity
        v = mu * v + prob.gradient(W)
        W = W - lr * v
    np.testing.assert_allclose(dense(Y), to_numpy(W), rtol=0, atol=1e-12)  # six steps of rounding


def test_zero_momentum_matches_plain_step_and_bad_momentum_raises(simple):
    Y, G = simple
    A, _ = tdlrt_step(Y, G, 0.1, 0.1)
    B, ib = tdlrt_step(Y, G, 0.1, 0.1, momentum=0.0, velocity=np.ones(Y.ranks))
    np.testing.assert_array_equal(dense(A), dense(B))
    assert ib.velocity is None
    with pytest.raises(ValueError, match="momentum"):
        tdlrt_step(Y, G, 0.1, 0.1, momentum=1.0)
    with pytest.raises(ValueError, match="velocity"):
        tdlrt_step(Y, G, 0.1, 0.1, momentum=0.5, velocity=np.ones((3, 3, 3)))


@given(cfg=tucker_configs(), tau=st.sampled_from([0.0, 0.1]))
def test_normal_gradient_norm_is_the_part_outside_the_augmented_space(xp, cfg, tau):
    Y, prob = setup(xp, cfg)
    G = prob.gradient(Y.to_tensor())
    _, info = tdlrt_step(Y, G, 0.5, tau)
    Y0, _ = tdlrt_step(Y, G, 0.5, 0.0)  # its bases span the augmented space (up to the rank cap)
    Uh = [to_numpy(U) for U in Y0.factors]
    Gn = to_numpy(G)
    outside = fro(Gn - expand_all(project_all(Gn, Uh), Uh))
    if Y0.ranks == info.ranks_augmented:
        assert info.normal_grad_norm == pytest.approx(outside, rel=1e-8, abs=1e-12)
    assert info.normal_grad_norm**2 + info.grad_core_norm**2 == pytest.approx(fro(Gn) ** 2, rel=1e-10)


def test_ranks_are_kept_compatible_when_bounds_differ_by_mode(xp):
    """r_max (2, 4, 4) on a (6, 6, 6) tensor: r_0 <= 2 forces nothing on the others, but
    r_max (4, 1, 1) would leave r_0 = 4 > r_1 r_2 = 1: mode 0 is cut to 1, exactly."""
    rng = np.random.default_rng(8)
    Y = random_tucker((6, 6, 6), (3, 3, 3), rng, xp=xp)
    prob = random_quadratic(Y.shape, rng, xp=xp)
    G = prob.gradient(Y.to_tensor())
    Y1, info = tdlrt_step(Y, G, 0.5, 0.0, r_max=(4, 1, 1))
    assert Y1.ranks == (1, 1, 1)
    Y2, info2 = tdlrt_step(Y, G, 0.5, 0.0, r_max=(2, 4, 4))
    assert Y2.ranks == (2, 4, 4)
    # the compatibility cut is exact: the truncation error is what the bounds alone remove
    assert info.truncation_error <= info.truncation_bound * (1 + TOL.rtol) + TOL.atol


@pytest.mark.parametrize("lr", [1e-2, 1e-3, 1e-4, 1e-5])
def test_float32_small_steps_still_augment(xp, lr):
    """range([K | U]) = range([U | grad_K]): a float32 step far below ||K|| must not round the
    new directions away (they would be lost from K = U R^T - λ grad_K)."""
    rng = np.random.default_rng(12)
    n, r = 64, 8
    U = np.linalg.qr(rng.standard_normal((n, r)))[0]
    V = np.linalg.qr(rng.standard_normal((n, r)))[0]
    core = np.diag(np.linspace(20.0, 1.0, r))
    Y = Tucker(xp.asarray(core.astype(np.float32)),
               (xp.asarray(U.astype(np.float32)), xp.asarray(V.astype(np.float32))))
    G = xp.asarray(rng.standard_normal((n, n)).astype(np.float32))
    _, info = tdlrt_step(Y, G, lr, 0.0)
    assert info.ranks_augmented == (2 * r, 2 * r)


def test_augment_of_a_square_basis_is_the_canonical_basis_without_an_svd_or_qr(xp, monkeypatch):
    """r_i = n_i: range(U_i) is the whole space, so Û_i = I and M̂_i = U_i, no SVD or QR spent;
    Û_i M̂_i = U_i exactly, also for a U_i that drifted from orthonormality by rounding."""
    import refdlrt.dlrt.integrator as integ

    rng = np.random.default_rng(3)
    U = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    K, D = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    for name in ("orth", "qr_signfixed"):
        monkeypatch.setattr(integ, name, lambda *a, **k: pytest.fail("called for a square U"))
    for basis in (U, U + 1e-6 * rng.standard_normal((5, 5))):
        for direction in (xp.asarray(D), None):
            U_hat, M_hat = integ.augment(xp.asarray(K), xp.asarray(basis), direction=direction)
            assert U_hat.dtype == M_hat.dtype == np.float64
            np.testing.assert_array_equal(to_numpy(U_hat), np.eye(5))
            np.testing.assert_array_equal(to_numpy(M_hat), basis)
    U_hat, M_hat = integ.augment(None, xp.asarray(U.astype(np.float32)))
    assert U_hat.dtype == np.float32


@pytest.mark.parametrize("fixed_rank", [False, True])
def test_square_adaptive_modes_take_no_k_step(xp, monkeypatch, fixed_rank):
    """A full-rank adaptive mode (square U_i, like a 3 x 3 kernel's spatial modes) spans the
    whole space, so augment would discard its K-step: it is not taken. The step equals the
    textbook step, which takes every K-step, bit for bit (the same operations on everything
    it keeps). Fixed-rank modes need their K_i."""
    import refdlrt.dlrt.integrator as integ
    from refdlrt.dlrt.reference import tdlrt_step_reference

    rng = np.random.default_rng(3)
    Y = random_tucker((6, 5, 3, 3), (2, 3, 3, 3), rng, xp=xp)
    G = xp.asarray(rng.standard_normal(Y.shape))
    modes, real = [], integ.k_step

    def spy(C, Us, i, grad, lr):
        modes.append(i)
        return real(C, Us, i, grad, lr)

    monkeypatch.setattr(integ, "k_step", spy)
    Y_new, info = tdlrt_step(Y, G, 0.1, 0.05, fixed_rank=fixed_rank)
    assert modes == ([0, 1, 2, 3] if fixed_rank else [0, 1])
    if not fixed_rank:
        assert info.ranks_augmented[2:] == (3, 3)
        ref = tdlrt_step_reference(Y, G, 0.1, 0.05)
        assert ref.ranks == Y_new.ranks
        for ours, theirs in zip((Y_new.core, *Y_new.factors), (ref.core, *ref.factors)):
            assert to_numpy(ours).tobytes() == to_numpy(theirs).tobytes()
