"""The baseline TDLRT is compared against: plain gradient descent on the Tucker factors.

This is the "train the factorisation directly" method of the paper's comparisons. It is
not robust to small singular values of the core unfoldings: the factor gradients carry
the core, so their effective step size depends on the core's conditioning.
"""

from __future__ import annotations

from typing import Sequence

from ..tensor.linalg import qr_signfixed
from ..tensor.tucker import Tucker, mode_product, unfold
from .projector import as_projector

__all__ = ["naive_factor_step", "naive_factor_gradients"]


def naive_factor_gradients(C, Us: Sequence, grad):
    """Gradients of (C, U_0, ..., U_{d-1}) -> L(C x_i U_i), all at the same point.

    Notes
    -----
        grad_C L   = G x_0 U_0^T ... x_{d-1} U_{d-1}^T,
        grad_U_i L = Mat_i(G x_{j≠i} U_j^T) Mat_i(C)^T.

    ``grad`` is G (an array) or a projector. Returns (grad_C, [grad_U_i]).
    """
    Us = list(Us)
    G = as_projector(grad, tuple(U.shape[0] for U in Us))
    grad_C = G.project(Us)  # r_0 x ... x r_{d-1}
    grad_Us = []
    for i in range(len(Us)):
        mats = [None if j == i else U for j, U in enumerate(Us)]
        grad_Us.append(unfold(G.project(mats), i) @ unfold(C, i).T)  # n_i x r_i
    return grad_C, grad_Us


def naive_factor_step(C, Us: Sequence, grad, lr: float, *, reorthonormalize: bool = False):
    """One step of gradient descent on (C, U_0, ..., U_{d-1}) for L(C x_i U_i).

    Parameters
    ----------
    C : array (r_0, ..., r_{d-1})
    Us : sequence of arrays (n_i, r_i)
    grad : array or projector
        G = grad_W L at W = C x_i U_i.
    lr : float
    reorthonormalize : bool
        After the step, QR each U_i = Q_i R_i and set U_i <- Q_i, C <- C x_i R_i (the
        represented tensor is unchanged by this).

    Returns
    -------
    Tucker
        The new (C, U_i); the factors are orthonormal only with ``reorthonormalize``.

    Notes
    -----
    Simultaneous update with the gradients of :func:`naive_factor_gradients`:
    C <- C - λ grad_C L, U_i <- U_i - λ grad_U_i L.
    """
    if lr <= 0:
        raise ValueError(f"lr: expected lr > 0, got {lr}")
    grad_C, grad_Us = naive_factor_gradients(C, Us, grad)
    C_new = C - lr * grad_C
    Us_new = [U - lr * gU for U, gU in zip(Us, grad_Us)]
    if reorthonormalize:
        for i, U in enumerate(Us_new):
            Q, R = qr_signfixed(U)
            Us_new[i] = Q
            C_new = mode_product(C_new, R, i)
    return Tucker(C_new, tuple(Us_new))
