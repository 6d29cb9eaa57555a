"""Gradient projectors: how the integrator reads the gradient G = grad_W L(Y).

The integrator never needs G itself, only its projections

    project(mats) = G x_0 mats[0]^T x_1 mats[1]^T ... x_{d-1} mats[d-1]^T,

where a ``None`` entry leaves that mode unprojected (ALGORITHM.md §2, steps 2 and 7).
:class:`DenseGradient` is the readable oracle that holds G and projects it; layers
provide their own projectors that contract cached activations instead, so G is
never formed. Any object with ``project(mats)`` (and optionally ``norm()``) works.

A projector may also offer ``k_gradient(i, mats, Q)`` = Mat_i(project(mats)) Q, the K-step's
gradient (ALGORITHM.md §2, step 2), when it can contract Q into its activations without forming
the n_i x Π_{j≠i} r_j projection first; :func:`k_contraction` uses it where it exists, and tests
pin it to the textbook ``unfold(project(mats), i) @ Q``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

from ..backend import fro
from ..tensor.tucker import multi_mode_product, unfold

__all__ = [
    "GradientProjector", "DenseGradient", "MomentumGradient", "as_projector", "k_contraction",
]


class GradientProjector(Protocol):
    """What the integrator needs of a gradient."""

    def project(self, mats: Sequence) -> object:  # pragma: no cover - protocol
        """Return G x_i mats[i]^T over every mode whose entry is not None."""


@dataclass(frozen=True)
class DenseGradient:
    """The dense gradient G (an array of the weight's full shape) as a projector."""

    G: object

    @property
    def shape(self) -> tuple:
        return tuple(self.G.shape)

    def project(self, mats: Sequence):
        """G x_0 mats[0]^T ... x_{d-1} mats[d-1]^T (None: mode untouched)."""
        if len(mats) != self.G.ndim:
            raise ValueError(
                f"project: expected {self.G.ndim} matrices (one per mode), got {len(mats)}"
            )
        return multi_mode_product(self.G, list(mats), transpose=True)

    def norm(self) -> float:
        """||G||_F."""
        return fro(self.G)


@dataclass(frozen=True)
class MomentumGradient:
    """The heavy-ball direction G + μ V, with the previous velocity V = v x_i U_i kept in
    low-rank form (core v in the bases U_i of the current weight).

    Notes
    -----
    (G + μ V) x_i A_i^T = G x_i A_i^T + μ v x_i (A_i^T U_i); a None entry leaves the mode
    unprojected, i.e. uses U_i itself, and an A_i that is U_i itself (the K-steps' projections
    onto the weight's own bases) leaves v unprojected: U_i^T U_i = I, as the step's inputs are
    checked to be orthonormal. V is never formed.
    """

    G: object
    v: object
    Us: tuple
    mu: float

    def _velocity_mats(self, mats: Sequence) -> list:
        """A_i^T U_i per mode, so that V x_i A_i^T = v x_i (A_i^T U_i): U_i where A_i is None
        (the mode stays unprojected), None (the identity, U_i^T U_i = I) where A_i is U_i itself,
        as in the K-steps, which project the other modes onto the weight's own bases."""
        return [U if A is None else (None if A is U else A.T @ U) for A, U in zip(mats, self.Us)]

    def project(self, mats: Sequence):
        mats_v = self._velocity_mats(mats)
        return self.G.project(mats) + self.mu * multi_mode_product(self.v, mats_v)

    def k_gradient(self, i: int, mats: Sequence, Q):
        """Mat_i((G + μV) x_j mats[j]^T) Q: G's part by :func:`k_contraction`, V's in the core."""
        v_part = unfold(multi_mode_product(self.v, self._velocity_mats(mats)), i) @ Q
        return k_contraction(self.G, i, mats, Q) + self.mu * v_part

    def norm(self):
        """||G + μV||_F, or None when G cannot tell its norm.

        Notes
        -----
        ||G + μV||² = ||G||² + 2μ <G x_i U_i^T, v> + μ² ||v||², since the U_i are orthonormal
        (||V|| = ||v||, <G, V> = <G x_i U_i^T, v>); V is never formed.
        """
        if not hasattr(self.G, "norm"):
            return None
        g = self.G.norm()
        if g is None:
            return None
        cross = float((self.G.project(list(self.Us)) * self.v).sum())
        sq = g**2 + 2 * self.mu * cross + self.mu**2 * fro(self.v) ** 2
        return math.sqrt(max(sq, 0.0))


def as_projector(grad, shape: tuple):
    """Wrap a dense gradient array in :class:`DenseGradient`; pass projectors through.

    Raises ValueError if a dense gradient does not have the weight's ``shape``.
    """
    if hasattr(grad, "project"):
        return grad
    if not hasattr(grad, "shape"):
        raise TypeError(
            f"grad: expected an array of shape {shape} or an object with project(mats), "
            f"got {type(grad).__name__}"
        )
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(f"grad: expected shape {tuple(shape)} (the weight's), got {tuple(grad.shape)}")
    return DenseGradient(grad)


def k_contraction(grad, i: int, mats: Sequence, Q):
    """Mat_i(G x_j mats[j]^T) Q (mats[i] None): the K-step's gradient (ALGORITHM.md §2, step 2).

    By the projector's own ``k_gradient`` where it has one, else the textbook route
    ``unfold(grad.project(mats), i) @ Q``.
    """
    if hasattr(grad, "k_gradient"):
        return grad.k_gradient(i, mats, Q)
    return unfold(grad.project(mats), i) @ Q
