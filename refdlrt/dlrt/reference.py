"""Algorithm 1 as a textbook function: one rank-adaptive TDLRT step, exactly as ALGORITHM.md §2
states it, calling the named steps in order. No options, no momentum, no diagnostics:
:func:`refdlrt.dlrt.integrator.tdlrt_step` is the full step, and a test pins the two together.

Modes count from 0 here (mode 0 = C_out of a conv kernel); ALGORITHM.md counts from 1.
"""

from __future__ import annotations

from ..tensor.tucker import Tucker
from .integrator import augment, k_step, lift, s_step, truncate
from .projector import DenseGradient

__all__ = ["tdlrt_step_reference"]


def tdlrt_step_reference(Y: Tucker, G, lr: float, tau: float) -> Tucker:
    """One rank-adaptive TDLRT step (ALGORITHM.md §2, Algorithm 1).

    Parameters
    ----------
    Y : Tucker
        Y = C x_0 U_0 ... x_{d-1} U_{d-1}, orthonormal U_i (n_i x r_i).
    G : array
        The dense gradient ∇_W L(Y), of Y's full shape.
    lr, tau : float
        Learning rate λ > 0 and relative truncation tolerance τ >= 0.

    Returns
    -------
    Tucker
        The new weight C' x_i U_i', its ranks chosen by the τ rule.
    """
    grad = DenseGradient(G)
    C, U, d = Y.core, Y.factors, Y.ndim

    # Steps 1-3, K-steps, every mode from the same G:  K_i = U_i R_i^T - λ Mat_i(G x_{j≠i} U_j^T) Q_i
    K, grad_K = zip(*(k_step(C, U, i, grad, lr) for i in range(d)))  # n_i x r_i each

    # Steps 4-5, augmented bases:  range(Û_i) = range([K_i | U_i]),  M̂_i = Û_i^T U_i
    U_hat, M_hat = zip(*(augment(K[i], U[i], direction=grad_K[i]) for i in range(d)))

    # Step 6, lift:  Ĉ = C x_i M̂_i, so that Ĉ x_i Û_i = Y exactly
    C_hat = lift(C, M_hat)  # r̂_0 x ... x r̂_{d-1}

    # Step 7, S-step:  Ĉ <- Ĉ - λ G x_i Û_i^T
    C_tilde, _ = s_step(C_hat, U_hat, grad, lr)

    # Steps 8-9, truncation:  HOSVD of the small core with ϑ = τ ||Ĉ||_F, then U_i' = Û_i P_i
    Y_new, _, _ = truncate(C_tilde, U_hat, tau, r_min=1, r_max=None)
    return Y_new
