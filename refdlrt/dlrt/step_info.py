"""What one TDLRT step reports besides the new weight: :class:`StepInfo`, and
:func:`make_step_info`, which :func:`refdlrt.dlrt.integrator.tdlrt_step` calls to fill it in."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

from ..backend import fro
from ..tensor.linalg import max_orthonormality_error
from ..tensor.tucker import multi_mode_product
from .projector import DenseGradient

__all__ = ["StepInfo", "make_step_info"]


@dataclass(frozen=True)
class StepInfo:
    """Diagnostics of one step, so validation never re-derives internals.

    Attributes
    ----------
    ranks_before, ranks_augmented, ranks_after : tuple of int
        r_i of the input, r̂_i of the augmented bases Û_i, r_i' after truncation.
    theta : float
        Absolute truncation tolerance ϑ = τ ||Ĉ||_F (Ĉ after the S-step); 0 for fixed rank.
    truncation_error : float
        η = ||Ỹ - Y_new||_F with Ỹ = Ĉ x_i Û_i after the S-step (computed in the core space,
        exact because the Û_i are orthonormal).
    truncation_bound : float
        The HOSVD a-priori bound (Σ_i Σ_{j>r_i'} σ_{i,j}²)^{1/2} ≥ η.
    grad_core_norm : float
        ||grad_Ĉ L||_F = ||D x_i Û_i^T||_F, D the step direction: G, or G + μV with momentum.
    grad_old_core_norm : float or None
        ||D x_i U_i^T||_F with the old bases (None when ``diagnostics=False``).
    grad_norm : float or None
        ||D||_F when the gradient can tell it (dense gradients, projectors with ``norm()``,
        and momentum on top of either); None otherwise.
    normal_grad_norm : float or None
        ||(I - 𝒫)D||_F (𝒫: projection onto the augmented space), the direction outside the augmented space: computed directly as
        ||G - (grad_Ĉ L) x_i Û_i|| for a dense gradient without momentum and with
        ``diagnostics``, else as (||D||² - ||grad_Ĉ L||²)^{1/2} when ||D|| is known (accurate
        only to ~1e-8 ||D||); None when ||D|| is not known.
    lift_error : float or None
        ||Ĉ x_i Û_i - Y||_F before the S-step (None when ``diagnostics=False``).
    orthonormality_error : float
        max_i ||U_i'^T U_i' - I||_F of the new bases (computed when first read: a training
        step never reads it, and the layer's weight setter checks the same bases).
    velocity : array or None
        With momentum: the new velocity's core in the new bases, to pass to the next step
        (the projected heavy-ball direction grad_Ĉ of G + μV, truncated by x_i P_i^T).
        None without momentum.
    new_factors : tuple of arrays
        The new bases U_i' (those of the returned Tucker tensor).
    """

    ranks_before: tuple
    ranks_augmented: tuple
    ranks_after: tuple
    theta: float
    truncation_error: float
    truncation_bound: float
    grad_core_norm: float
    grad_old_core_norm: float | None
    grad_norm: float | None
    lift_error: float | None
    normal_grad_norm: float | None = None
    velocity: object = None
    new_factors: tuple = field(default=(), repr=False, compare=False)  # the U_i', for the property

    @cached_property
    def orthonormality_error(self) -> float:
        if not self.new_factors:
            raise ValueError("StepInfo.orthonormality_error: no new factors were given (new_factors=())")
        return max_orthonormality_error(self.new_factors)


def make_step_info(Y, G, C_hat, U_hats, grad_C, Y_new, theta, eta, bound, v_new, diagnostics,
                   *, norms: bool = True):
    """Diagnostics of the step (see :class:`StepInfo`); ``norms=False`` leaves ``grad_norm``
    and ``normal_grad_norm`` None (with momentum ||G + μV|| costs a projection of G)."""
    grad_norm = G.norm() if norms and hasattr(G, "norm") else None
    if diagnostics and isinstance(G, DenseGradient):
        normal = fro(G.G - multi_mode_product(grad_C, U_hats))
    elif grad_norm is not None:
        normal = math.sqrt(max(grad_norm**2 - fro(grad_C) ** 2, 0.0))
    else:
        normal = None
    return StepInfo(
        ranks_before=tuple(Y.ranks),
        ranks_augmented=tuple(int(U.shape[1]) for U in U_hats),
        ranks_after=tuple(Y_new.ranks),
        theta=theta,
        truncation_error=eta,
        truncation_bound=bound,
        grad_core_norm=fro(grad_C),
        grad_old_core_norm=fro(G.project(list(Y.factors))) if diagnostics else None,
        grad_norm=grad_norm,
        normal_grad_norm=normal,
        lift_error=fro(multi_mode_product(C_hat, U_hats) - Y.to_tensor()) if diagnostics else None,
        new_factors=tuple(Y_new.factors),
        velocity=v_new,
    )
