"""The rank-adaptive step for a matrix weight (d = 2, matrix DLRT), with the K-steps' QRs left out.

For d = 2, W = U_0 C U_1^T, the two K-steps' gradients are (ALGORITHM.md §2, step 2)

    grad_{K_0} L = (G U_1) Q_0,        grad_{K_1} L = (G^T U_0) Q_1,

with Q_0 R_0 = C^T and Q_1 R_1 = C. Compatible ranks make C square (r_0 = r_1 = r), so Q_i is
an r x r orthogonal matrix. The augmentation needs only the range of [U_i | grad_{K_i} L] and
the norm ||grad_{K_i} L||_F, and neither changes when Q_i is dropped; nor does the augmented
basis, whose Gram matrix [U_i | D_i] [U_i | D_i]^T is the same with D_i = grad_{K_i} L / ||.||
or (G U_1) / ||G U_1|| (Û_i = the leading left singular vectors, the same up to the sign of each
column, rotations within repeated singular values, and rounding). So this step takes D_0 = G U_1 and D_1 = G^T U_0 directly: no QR of the
core, no K_i = U_i R_i^T, no K_i - λ grad_{K_i} L, which the rank-adaptive step never reads
(:func:`refdlrt.dlrt.integrator.augment` builds Û_i from the direction). Everything after the
augmentation, the lift, the S-step, the truncation and the momentum transport, is the
integrator's own functions, called in the same order.

It is the training loop's step for the low-rank linear layers (``Trainer``; a core made
non-square by explicit ranks takes ``tdlrt_step``, whose truncation makes it square); a test pins
it to :func:`refdlrt.dlrt.integrator.tdlrt_step`: the same ranks (where no singular value sits at
rounding level with τ = 0, which one decomposition keeps and another drops), the same weight,
velocity and step numbers to the dtype's tolerance.
"""

from __future__ import annotations

import math

from ..backend import fro, get_xp
from ..tensor.hosvd import _check_tau, _rank_from_tails, tail_norms
from ..tensor.linalg import _descending_eigh, svd_thin
from ..tensor.ranks import truncation_bounds
from ..tensor.tucker import Tucker
from .integrator import (
    _check_finite,
    _check_momentum,
    _check_s_step,
    _check_step_args,
    _check_truncation,
    _rank_bounds,
    _step_direction,
    augment,
    lift,
    s_step,
    transport_velocity,
    truncate,
)
from .step_info import make_step_info

__all__ = ["matrix_step", "truncate_matrix"]

# Derive one side's singular vectors from the other's (Z = C^T P Σ^{-1}, all in float64) only
# where σ_1 / σ_r is at most this: Z_r is then orthonormal to eps₆₄ (σ_1 / σ_r)² ≤ 2.2e-10 (the
# Gram matrix's own error, eps₆₄ σ_1², divided by σ_i σ_j), far below float32's rounding.
_MAX_KEPT_RATIO = 1e3


def matrix_step(Y: Tucker, grad, lr: float, tau: float, *, r_min: int = 1, r_max=None,
                momentum: float = 0.0, velocity=None):
    """One rank-adaptive step of a matrix weight Y = U_0 C U_1^T (d = 2), every mode adaptive.

    Parameters
    ----------
    Y : Tucker of order 2 with a square core (r_0 = r_1 = r), orthonormal U_0 (n_0 x r), U_1 (n_1 x r)
    grad : the dense gradient G (n_0 x n_1) or a projector (``project(mats)``)
    lr, tau : learning rate λ > 0 and relative truncation tolerance τ >= 0
    r_min, r_max, momentum, velocity : as in :func:`refdlrt.dlrt.integrator.tdlrt_step`

    Returns
    -------
    (Tucker, StepInfo), as :func:`refdlrt.dlrt.integrator.tdlrt_step` with ``diagnostics=False``
    (and ``fixed_rank=False``, ``adaptive_modes=None``) returns them, but for the StepInfo's
    ``grad_norm`` and ``normal_grad_norm``, which are None (they would cost a projection of G
    that the step does not need).

    Notes
    -----
    With the step's direction D = G + μV (:class:`refdlrt.dlrt.projector.MomentumGradient`):

        Û_0 = orth([U_0 | D U_1 / ||D U_1||_F]),   Û_1 = orth([U_1 | D^T U_0 / ||D^T U_0||_F]),
        Ĉ = M̂_0 C M̂_1^T (M̂_i = Û_i^T U_i),   C̃ = Ĉ - λ Û_0^T D Û_1,

    then :func:`truncate_matrix`. A square U_i (r = n_i) spans everything: Û_i = I, as in
    :func:`refdlrt.dlrt.integrator.augment`, and D's product for it is not taken.
    """
    _check_step_args(Y, lr, tau, "matrix_step")
    if Y.ndim != 2:
        raise ValueError(f"matrix_step: expected a matrix weight (d = 2), got d = {Y.ndim}; "
                         f"use tdlrt_step")
    _check_momentum(momentum, velocity, Y.ranks)
    if Y.ranks[0] != Y.ranks[1]:
        raise ValueError(f"matrix_step: expected a square core (compatible ranks), got {Y.ranks}")
    G = _step_direction(Y, grad, momentum, velocity)
    r_max = _rank_bounds(r_min, r_max, Y.shape)
    U0, U1 = Y.factors

    U_hats, M_hats = [], []
    for i, U in enumerate(Y.factors):
        if U.shape[0] == U.shape[1]:  # range(U_i) is the whole space: Û_i = I, no direction
            U_hat, M_hat = augment(None, U)  # n_i x n_i, n_i x n_i
        else:
            D = G.project([None, U1]) if i == 0 else G.project([U0, None]).T  # D U_1 or D^T U_0: n_i x r
            _check_finite(D, f"the K-gradient of mode {i}")
            U_hat, M_hat = augment(None, U, direction=D)  # n_i x r̂_i, r̂_i x r
        U_hats.append(U_hat)
        M_hats.append(M_hat)
    C_hat = lift(Y.core, M_hats)  # r̂_0 x r̂_1
    C_tilde, grad_C = s_step(C_hat, U_hats, G, lr)
    _check_s_step(C_tilde, grad_C, Y.core.dtype, "matrix_step")
    Y_new, theta, eta, bound = truncate_matrix(C_tilde, U_hats, tau, r_min, r_max)
    _check_truncation(theta, eta, "matrix_step")
    v_new = transport_velocity(grad_C, U_hats, Y_new.factors) if momentum else None
    info = make_step_info(Y, G, C_hat, U_hats, grad_C, Y_new, theta, eta, bound, v_new,
                          diagnostics=False, norms=False)
    return Y_new, info


def truncate_matrix(C_tilde, U_hats, tau: float, r_min: int, r_max):
    """Steps 8-9 for d = 2: the HOSVD of a matrix is its SVD, C̃ = P Σ Z^T.

    Parameters
    ----------
    C_tilde : r̂_0 x r̂_1 core after the S-step;  U_hats : (Û_0, Û_1)
    tau, r_min : as in :func:`refdlrt.dlrt.integrator.truncate`;  r_max : two ints (per mode)

    Returns
    -------
    (Tucker, ϑ, η, bound) as :func:`refdlrt.dlrt.integrator._truncate_adaptive` returns them.

    Notes
    -----
    Mat_0(C̃) = C̃ and Mat_1(C̃) = C̃^T have the same singular values, so both modes take their
    rank from one tail vector, r_i = the τ rule clamped to mode i's bounds, then the compatible
    r = min(r_0, r_1); and P_1 = Z. One decomposition instead of the HOSVD's two:
    float64 by LAPACK's SVD; float32 by the float64 Gram matrix of C̃'s shorter side (as
    :func:`refdlrt.tensor.linalg.left_singular`; σ rounded to float32 as there, for the same
    ranks), whose other singular vectors are then Z_r = C̃^T P_r Σ_r^{-1} (or
    P_r = C̃ Z_r Σ_r^{-1}), from P_r and Σ_r in float64: orthonormal to eps₆₄ (σ_1 / σ_r)².
    Where σ_1 / σ_r exceeds 1e3 (so that this could approach float32's rounding), and where
    σ_r = 0, the step takes the HOSVD route,
    :func:`refdlrt.dlrt.integrator.truncate`. C' = P_r^T C̃ Z_r, U_i' = Û_i P_i;
    bound = (tails(r_0)² + tails(r_1)²)^{1/2} before the compatible cut, as the HOSVD reports it.
    """
    xp = get_xp(C_tilde)
    m, n = C_tilde.shape
    lo, hi = truncation_bounds(r_min, r_max, (m, n), (True, True))
    norm = fro(C_tilde)
    theta = _check_tau(tau) * norm
    if C_tilde.dtype == xp.float64:
        P, s, Zt = svd_thin(C_tilde)  # m x k, k, k x n
    else:
        wide = m <= n
        A64 = (C_tilde if wide else C_tilde.T).astype(xp.float64)  # shorter side first: k x l
        P, s64 = _descending_eigh(A64 @ A64.T)  # k x k, k (left_singular's Gram route, in float64)
        s = s64.astype(C_tilde.dtype)
    tails = tail_norms(s)
    r0, r1 = (_rank_from_tails(tails, theta, lo[i], hi[i]) for i in range(2))
    r = min(r0, r1)
    if C_tilde.dtype == xp.float64:
        P0, P1 = P[:, :r], Zt[:r].T  # m x r, n x r
    else:
        s_r = s[:r]
        if not float(s_r[-1]) * _MAX_KEPT_RATIO >= float(s_r[0]):  # also σ_r = 0
            Y_new, info, eta = truncate(C_tilde, U_hats, tau, r_min=lo, r_max=hi)
            return Y_new, float(info.theta), eta, float(info.bound)
        Pa = P[:, :r]  # k x r, float64
        Pb = (A64.T @ Pa) / s64[:r]  # l x r: the other side's vectors
        Pa, Pb = Pa.astype(C_tilde.dtype), Pb.astype(C_tilde.dtype)
        P0, P1 = (Pa, Pb) if wide else (Pb, Pa)  # m x r, n x r
    core = P0.T @ C_tilde @ P1  # r x r
    eta = fro(C_tilde - P0 @ core @ P1.T)
    bound = math.sqrt(float(tails[r0]) ** 2 + float(tails[r1]) ** 2)
    Us = (U_hats[0] @ P0, U_hats[1] @ P1)  # n_i x r
    return Tucker(core, Us), theta, eta, bound
