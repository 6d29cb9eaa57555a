"""One TDLRT step: the rank-adaptive Tucker "basis update & Galerkin" (BUG) integrator.

Each function is one step of ALGORITHM.md §2 (0-based modes in code; the paper counts
from 1). Symbols: core C (r_0 x ... x r_{d-1}), bases U_i (n_i x r_i, orthonormal),
learning rate lr = λ, tolerance tau = τ, gradient G = grad_W L(Y) given as a projector
(see :mod:`refdlrt.dlrt.projector`). d = 2 is matrix DLRT (W = U_0 C U_1^T).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .._checks import check_float_array, check_same_dtype, is_int
from ..backend import fro, get_xp
from ..tensor.hosvd import hosvd
from ..tensor.linalg import check_orthonormal, orth, qr_signfixed
from ..tensor.ranks import compatible_ranks, truncation_bounds
from ..tensor.tucker import Tucker, multi_mode_product, unfold
from .projector import MomentumGradient, as_projector, k_contraction
from .step_info import StepInfo, make_step_info

__all__ = [
    "StepInfo",
    "tdlrt_step",
    "k_step",
    "k_gradient",
    "basis_update",
    "transport_velocity",
    "augment",
    "lift",
    "s_step",
    "truncate",
]


def _check_finite(a, what: str):
    xp = get_xp(a)
    if not bool(xp.isfinite(a).all()):
        raise FloatingPointError(f"{what} contains NaN or Inf; refusing to produce NaN factors")


def k_gradient(C, Us: Sequence, i: int, grad):
    """K_i = U_i R_i^T and grad_{K_i} L for mode i (the K-step without the step).

    Notes
    -----
    Mat_i(C)^T = Q_i R_i (sign-fixed QR), so Mat_i(Y) = K_i Q_i^T (⊗_{j≠i} U_j)^T with
    K_i = U_i R_i^T, and

        grad_{K_i} L = Mat_i(G x_{j≠i} U_j^T) Q_i.

    Returns (K_i, grad_{K_i} L), both n_i x min(r_i, Π_{j≠i} r_j). A projector with its own
    ``k_gradient`` contracts Q_i itself (:func:`refdlrt.dlrt.projector.k_contraction`).
    """
    grad = as_projector(grad, tuple(U.shape[0] for U in Us))  # a dense G is accepted too
    Q, R = qr_signfixed(unfold(C, i).T)  # Q: Π_{j≠i} r_j x r_i,  R: r_i x r_i
    K = Us[i] @ R.T  # n_i x r_i
    mats = [None if j == i else U for j, U in enumerate(Us)]
    grad_K = k_contraction(grad, i, mats, Q)  # Mat_i(G x_{j≠i} U_j^T) Q: n_i x r_i
    _check_finite(grad_K, f"the K-gradient of mode {i}")
    return K, grad_K


def k_step(C, Us: Sequence, i: int, grad, lr: float):
    """K-step of mode i (ALGORITHM.md §2, steps 1-3): K_i <- K_i - λ grad_{K_i} L.

    Returns (K_i after the step, grad_{K_i} L), both n_i x min(r_i, Π_{j≠i} r_j); the
    gradient is returned too because :func:`augment` builds Û_i from it (see there).
    """
    K, grad_K = k_gradient(C, Us, i, grad)
    K_new = K - lr * grad_K
    _check_finite(K_new, f"K_{i} after the step")
    return K_new, grad_K


def augment(K, U, *, direction=None):
    """Augmented basis Û_i: an orthonormal basis of exactly range([K_i | U_i]), and M̂_i.

    Parameters
    ----------
    K, U : the stepped K_i (n_i x k) and the basis U_i (n_i x r_i). K is not used (and may
        be None) when U_i is square.
    direction : array, optional
        grad_{K_i} L. Since K_i = U_i R_i^T - λ grad_{K_i} L with λ > 0,
        range([K_i | U_i]) = range([U_i | grad_{K_i} L]) exactly, and the latter is free of
        the cancellation that rounds small steps away in K_i (in float32 a step λ grad_K far
        below ||K_i|| would otherwise lose its new directions). Used when given.

    Notes
    -----
    Û_i = orth([K_i | U_i]) (or orth([U_i | grad_K / ||grad_K||])): the left singular vectors
    whose singular values exceed max(n_i, r_i + k) · eps · σ_max, k the width of K_i (see
    :func:`refdlrt.tensor.linalg.orth`),
    so a rank-deficient matrix gives exactly its rank and never columns outside its range.
    Width r̂_i ≤ min(2 r_i, n_i). Then M̂_i = Û_i^T U_i  (r̂_i x r_i). Every direction of
    range(U_i) has singular value >= 1 in these matrices, so range(Û_i) ⊇ range(U_i) to rounding.
    A square U_i (r_i = n_i) already spans everything: then Û_i = I (the canonical basis) and
    M̂_i = U_i, with no SVD or QR. The lift then absorbs U_i into the core (Ĉ x_i Û_i = Y
    exactly, even for a U_i that drifted from orthonormality by rounding), and the truncation
    makes the new factor from the HOSVD's orthonormal P_i alone, so rounding cannot accumulate
    over steps.
    """
    xp = get_xp(K, U)
    if U.shape[0] == U.shape[1]:  # range(U_i) is the whole space
        return xp.eye(U.shape[0], dtype=U.dtype), U.copy()  # n_i x n_i, n_i x n_i
    if direction is None:
        B = xp.concatenate([K, U], axis=1)  # n_i x (k + r_i)
    else:
        scale = fro(direction)
        D = direction / scale if scale > 0 else direction
        B = xp.concatenate([U, D], axis=1)  # n_i x (r_i + k)
    U_hat = orth(B)  # n_i x r̂_i
    return U_hat, U_hat.T @ U  # r̂_i x r_i


def lift(C, M_hats: Sequence):
    """Lift the core into the augmented bases: Ĉ = C x_0 M̂_0 ... x_{d-1} M̂_{d-1}.

    Because range(Û_i) ⊇ range(U_i), Ĉ x_i Û_i = Y exactly (lift exactness).
    """
    return multi_mode_product(C, list(M_hats))


def s_step(C_hat, U_hats: Sequence, grad, lr: float):
    """Galerkin step on the augmented core: Ĉ <- Ĉ - λ grad_Ĉ L.

    Notes
    -----
    grad_Ĉ L = G x_0 Û_0^T ... x_{d-1} Û_{d-1}^T, taken at the same point Y (the lifted
    tensor equals Y, so no new forward pass is needed). Returns (Ĉ after the step, grad_Ĉ L).
    A mode whose Û_i is the identity (:func:`augment` of a square U_i) is left unprojected,
    the same numbers without the product.
    """
    grad = as_projector(grad, tuple(U.shape[0] for U in U_hats))  # a dense G is accepted too
    grad_C = grad.project([None if _is_identity(U) else U for U in U_hats])  # r̂_0 x ... x r̂_{d-1}
    _check_finite(grad_C, "the core gradient")
    return C_hat - lr * grad_C, grad_C


def _is_identity(U) -> bool:
    """U is the identity matrix (what :func:`augment` returns for a square U_i)."""
    xp = get_xp(U)
    return U.shape[0] == U.shape[1] and bool(xp.array_equal(U, xp.eye(U.shape[0], dtype=U.dtype)))


def truncate(C_hat, U_hats: Sequence, tau: float, *, r_min=1, r_max=None):
    """Truncate the augmented tensor by an HOSVD of its small core.

    Notes
    -----
    SVD Mat_i(Ĉ) = P_i Σ_i Z_i^T; r_i' = smallest r with (Σ_{j>r} σ_{i,j}²)^{1/2} ≤ ϑ,
    ϑ = τ ||Ĉ||_F, clamped to [r_min_i, r_max_i]; then

        C <- Ĉ x_i P_i[:, :r_i']^T,     U_i <- Û_i P_i[:, :r_i'].

    Only the left singular vectors P_i are used. ``r_min``/``r_max`` are per mode.
    The ranks are then made compatible, r_i' <= Π_{j≠i} r_j' (Mat_i(C) has at most that many
    nonzero singular values, so the columns beyond it carry no mass): an HOSVD of the new core
    at those ranks removes them exactly. (It happens when rank bounds differ by mode, and
    rarely from the τ rule itself, when the per-mode tails of Ĉ select incompatible ranks.)
    Returns (Tucker, HOSVDInfo, η = ||Ĉ - C x_i P_i||_F).
    """
    P_tucker, info = hosvd(C_hat, tau=tau, r_min=r_min, r_max=r_max)
    ranks = compatible_ranks(P_tucker.ranks)
    if ranks != P_tucker.ranks:
        Z, _ = hosvd(P_tucker.core, ranks=ranks)
        P_tucker = Tucker(Z.core, tuple(P @ Q for P, Q in zip(P_tucker.factors, Z.factors)))
    eta = fro(C_hat - P_tucker.to_tensor())
    Us = tuple(U_hat @ P for U_hat, P in zip(U_hats, P_tucker.factors))  # n_i x r_i'
    return Tucker(P_tucker.core, Us), info, eta


def _rank_bounds(r_min, r_max, shape):
    d = len(shape)
    if not is_int(r_min) or r_min < 1:
        raise ValueError(f"r_min: expected an int >= 1, got {r_min!r}")
    if r_max is None:
        r_max = list(shape)
    elif is_int(r_max):
        r_max = [int(r_max)] * d
    else:
        r_max = [int(r) for r in r_max]
        if len(r_max) != d:
            raise ValueError(f"r_max: expected an int or {d} values (one per mode), got {len(r_max)}")
    for i, (rm, n) in enumerate(zip(r_max, shape)):
        if min(rm, n) < min(r_min, n):  # r_min above n_i is clamped to n_i, not an error
            raise ValueError(f"r_min > r_max: mode {i} has r_min={r_min}, r_max={rm}")
    return [min(rm, n) for rm, n in zip(r_max, shape)]


def _check_step_args(Y, lr, tau, who: str = "tdlrt_step"):
    if not isinstance(Y, Tucker):
        raise TypeError(f"Y: expected a Tucker tensor, got {type(Y).__name__}")
    if Y.ndim < 2:
        raise ValueError(f"Y: expected a Tucker tensor of order d >= 2, got d = {Y.ndim}")
    for i, (r, n) in enumerate(zip(Y.ranks, Y.shape)):
        if r > n:
            raise ValueError(f"mode {i}: rank r={r} exceeds the dimension n={n}")
    check_float_array(Y.core, f"{who}: Y.core")
    check_same_dtype(("Y.core", Y.core), *((f"Y.factors[{i}]", U) for i, U in enumerate(Y.factors)))
    check_orthonormal(Y.factors, f"{who}: Y")
    for name, v in (("lr", lr), ("tau", tau)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name}: expected a real number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError(f"{name}: expected a finite number, got {v}")
    if lr <= 0:
        raise ValueError(f"lr: expected lr > 0, got {lr}")
    if tau < 0:
        raise ValueError(f"tau: expected tau >= 0, got {tau}")


def _check_momentum(momentum, velocity, core_shape):
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum: expected 0 <= momentum < 1, got {momentum}")
    if velocity is not None and tuple(velocity.shape) != tuple(core_shape):
        raise ValueError(
            f"velocity: expected the core's shape {tuple(core_shape)}, got {tuple(velocity.shape)}"
        )


def tdlrt_step(
    Y: Tucker,
    grad,
    lr: float,
    tau: float,
    *,
    r_min: int = 1,
    r_max=None,
    adaptive_modes=None,
    fixed_rank: bool = False,
    diagnostics: bool = True,
    momentum: float = 0.0,
    velocity=None,
):
    """One step of the rank-adaptive Tucker BUG integrator (ALGORITHM.md §2, Algorithm 1).

    The textbook form of the same step, without the options, is
    :func:`refdlrt.dlrt.reference.tdlrt_step_reference`; a test pins the two together.

    Parameters
    ----------
    Y : Tucker
        Current low-rank weight Y = C x_0 U_0 ... x_{d-1} U_{d-1}, orthonormal U_i, d >= 2.
    grad : array or projector
        Dense gradient G = grad_W L(Y) (Y's full shape) or an object with ``project(mats)``
        returning G x_i mats[i]^T (None: mode unprojected).
    lr : float
        Learning rate λ > 0.
    tau : float
        Relative truncation tolerance τ >= 0 (ϑ = τ ||Ĉ||_F).
    r_min, r_max : int, int or sequence
        Rank bounds; r_max defaults to n_i and is capped at n_i.
    adaptive_modes : iterable of int, optional
        Modes that are augmented and truncated (default: all). The others take a
        fixed-rank K-step: Û_i = orth(K_i) with r_i columns, and keep rank r_i.
    fixed_rank : bool
        The fixed-rank BUG integrator: Û_i = orth(K_i) in every mode, no truncation. There
        (and in non-adaptive modes) range(Û_i) need not contain range(U_i): the lift is not
        exact and the S-step uses the gradient at Y, the usual one-backward approximation;
        the lift-exactness and descent guarantees of §4 are for the rank-adaptive step.
    diagnostics : bool
        Also compute the lift error and ||G x_i U_i^T|| (costs a dense Y and one projection).
    momentum, velocity : float, array or None
        Heavy-ball momentum μ in [0, 1). ``velocity`` is the core v of the previous velocity
        V = v x_i U_i in Y's bases (shape = core shape; None = zero). The whole step (K-steps
        and S-step) is taken with the direction D = G + μV (see :class:`MomentumGradient`), and
        the new velocity is its Galerkin projection grad_Ĉ, carried into the new bases by the
        truncation (x_i P_i^T) and returned as ``StepInfo.velocity`` (ALGORITHM.md §2,
        "Momentum"). With square factors (r_i = n_i) and nothing truncated this is heavy ball
        exactly; otherwise the part of D outside the augmented space is dropped.

    Returns
    -------
    (Tucker, StepInfo)
    """
    _check_step_args(Y, lr, tau)
    _check_momentum(momentum, velocity, Y.ranks)
    G = _step_direction(Y, grad, momentum, velocity)
    r_max = _rank_bounds(r_min, r_max, Y.shape)
    adaptive = _adaptive_modes(adaptive_modes, fixed_rank, Y.ndim)

    U_hats, M_hats = basis_update(Y, G, lr, adaptive)  # steps 1-5
    C_hat = lift(Y.core, M_hats)  # step 6: r̂_0 x ... x r̂_{d-1}
    C_tilde, grad_C = s_step(C_hat, U_hats, G, lr)  # step 7
    _check_s_step(C_tilde, grad_C, Y.core.dtype, "tdlrt_step")
    Y_new, theta, eta, bound = _truncate_adaptive(C_tilde, U_hats, tau, adaptive, r_min, r_max)
    _check_truncation(theta, eta, "tdlrt_step")
    v_new = transport_velocity(grad_C, U_hats, Y_new.factors) if momentum else None
    info = make_step_info(Y, G, C_hat, U_hats, grad_C, Y_new, theta, eta, bound, v_new, diagnostics)
    return Y_new, info


def _check_s_step(C_tilde, grad_C, dtype, who: str):
    """The S-step's core is finite and its projections came back in the weight's dtype."""
    _check_finite(C_tilde, "the core after the S-step")
    if grad_C.dtype != dtype:  # a projector answered in another precision
        raise TypeError(f"{who}: the gradient's projections have dtype {grad_C.dtype}, "
                        f"expected {dtype} (the weight's)")


def _check_truncation(theta: float, eta: float, who: str):
    """The truncation's tolerance ϑ and error η are finite (a NaN ϑ would cut every rank)."""
    if not (math.isfinite(theta) and math.isfinite(eta)):
        raise FloatingPointError(f"{who}: the truncation tolerance ({theta}) or error ({eta}) "
                                 f"is not finite; refusing a silent rank collapse")


def _step_direction(Y: Tucker, grad, momentum: float, velocity):
    """The direction D of the step as a projector: G (checked when dense), or G + μV with
    momentum and a velocity (:class:`MomentumGradient`)."""
    G = as_projector(grad, Y.shape)
    if hasattr(G, "G"):  # a dense gradient: the same dtype rule as conv2d_forward's
        check_float_array(G.G, "tdlrt_step: grad")
        check_same_dtype(("Y.core", Y.core), ("grad", G.G))
        _check_finite(G.G, "grad")
    if velocity is not None:
        check_float_array(velocity, "tdlrt_step: velocity")
        check_same_dtype(("Y.core", Y.core), ("velocity", velocity))
    if momentum and velocity is not None:
        G = MomentumGradient(G, velocity, tuple(Y.factors), float(momentum))
    return G


def _adaptive_modes(adaptive_modes, fixed_rank: bool, d: int) -> list:
    """Per mode: True where the mode is augmented and truncated."""
    if adaptive_modes is None:
        return [not fixed_rank] * d
    modes = {int(i) for i in adaptive_modes}
    if not modes <= set(range(d)):
        raise ValueError(f"adaptive_modes: expected modes in 0..{d - 1}, got {sorted(modes)}")
    return [(i in modes) and not fixed_rank for i in range(d)]


def basis_update(Y: Tucker, grad, lr: float, adaptive: Sequence[bool]):
    """Steps 1-5 for every mode: K-step from the same gradient at Y, then Û_i and M̂_i.

    Adaptive modes get the augmented basis Û_i ⊇ range(U_i) (:func:`augment`, width
    r̂_i <= min(2 r_i, n_i)); the others the fixed-rank basis Û_i = orth(K_i) (r_i columns).
    Returns (Û_0..Û_{d-1}, M̂_0..M̂_{d-1}) with M̂_i = Û_i^T U_i.
    An adaptive mode with a square U_i (r_i = n_i, e.g. a 3 x 3 kernel's spatial modes) spans
    the whole space already: :func:`augment` ignores K_i there, so its K-step is not taken.
    """
    U_hats, M_hats = [], []
    for i, U in enumerate(Y.factors):
        if adaptive[i] and U.shape[0] == U.shape[1]:  # Û_i = the whole space, whatever K_i is
            U_hat, M_hat = augment(None, U)  # n_i x n_i, n_i x n_i
        else:
            K, grad_K = k_step(Y.core, Y.factors, i, grad, lr)  # n_i x r_i
            if adaptive[i]:
                U_hat, M_hat = augment(K, U, direction=grad_K)  # n_i x r̂_i, r̂_i x r_i
            else:
                U_hat, M_hat = _fixed_rank_basis(K, U, i)  # n_i x r_i, r_i x r_i
        U_hats.append(U_hat)
        M_hats.append(M_hat)
    return tuple(U_hats), tuple(M_hats)


def _fixed_rank_basis(K, U, i: int):
    """Fixed-rank BUG basis Û_i = orth(K_i) (sign-fixed QR) and M̂_i = Û_i^T U_i."""
    if K.shape[1] < U.shape[1]:
        raise ValueError(
            f"fixed-rank mode {i}: rank r={U.shape[1]} exceeds the product of the other ranks "
            f"{K.shape[1]}; the core unfolding cannot have full row rank"
        )
    U_hat, _ = qr_signfixed(K)  # n_i x r_i
    return U_hat, U_hat.T @ U


def _truncate_adaptive(C_tilde, U_hats, tau, adaptive, r_min, r_max):
    """Steps 8-9 on the adaptive modes; the others keep their width. Returns
    (Y_new, ϑ, η, HOSVD bound); nothing is truncated when no mode adapts."""
    if not any(adaptive):
        return Tucker(C_tilde, tuple(U_hats)), 0.0, 0.0, 0.0
    lo, hi = truncation_bounds(r_min, r_max, [int(U.shape[1]) for U in U_hats], adaptive)
    Y_new, hinfo, eta = truncate(C_tilde, U_hats, tau, r_min=lo, r_max=hi)
    return Y_new, float(hinfo.theta), eta, float(hinfo.bound)


def transport_velocity(grad_C, U_hats: Sequence, new_factors: Sequence):
    """The new velocity core v' = grad_Ĉ x_i P_i^T with P_i = Û_i^T U_i' (r̂_i x r_i').

    Notes
    -----
    grad_Ĉ = D x_i Û_i^T is the Galerkin projection of the step direction D = G + μV; the
    truncation re-bases the weight to U_i' = Û_i P_i, and the velocity is carried along by the
    same P_i, so that V' = v' x_i U_i' (ALGORITHM.md §2, "Momentum").
    """
    P = [U_hat.T @ U for U_hat, U in zip(U_hats, new_factors)]  # r̂_i x r_i'
    return multi_mode_product(grad_C, P, transpose=True)
