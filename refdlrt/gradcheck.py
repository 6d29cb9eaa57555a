"""Gradient checkers: the adjoint test and an exact adjoint check for linear maps.

The adjoint test checks a hand-written backward ``vjp`` against the forward ``f``:
for random directions t (input side) and c (output side),

    <J t, c>  ==  <t, J^T c>,

where J t is taken by central differences, (f(x + eps t) - f(x - eps t)) / (2 eps),
in float64, and J^T c is what the backward returns. For a linear map A with a
claimed adjoint A^T the identity <A x, y> == <x, A^T y> must hold to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .backend import fro, get_xp, to_numpy
from .tolerances import tolerance

__all__ = ["AdjointResult", "adjoint_test", "linear_adjoint_check"]


@dataclass(frozen=True)
class AdjointResult:
    """Outcome of one adjoint check: lhs = <J t, c>, rhs = <t, J^T c>."""

    wrt: int
    lhs: float
    rhs: float
    rel_error: float
    rtol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.rel_error) and self.rel_error <= self.rtol)


def _vdot(a, b) -> float:
    return float(to_numpy((a * b).sum()))


def _as_tuple(g):
    return tuple(g) if isinstance(g, (tuple, list)) else (g,)


def adjoint_test(
    f: Callable,
    vjp: Callable,
    inputs: Sequence,
    rng: np.random.Generator,
    *,
    wrt: Sequence[int] | None = None,
    eps: float | None = None,
    rtol: float | None = None,
) -> list[AdjointResult]:
    """Check ``vjp`` against central differences of ``f`` along random directions.

    Parameters
    ----------
    f : callable
        ``f(*inputs) -> out`` (one array).
    vjp : callable
        ``vjp(c) -> grads``: the claimed J^T c, one gradient per input (a tuple, or a
        single array when there is one input; ``None`` for inputs without gradient).
    inputs : sequence of float64 arrays
        The point x at which J is taken.
    rng : numpy.random.Generator
        Source of the random directions t and c.
    wrt : sequence of int, optional
        Which inputs to check (default: every input whose gradient is not None).
    eps, rtol : float, optional
        Step and relative tolerance; default from the float64 row of the tolerance table.

    Returns
    -------
    list of AdjointResult, one per checked input.

    Notes
    -----
    Checks  <(f(x + eps t) - f(x - eps t)) / (2 eps), c>  ==  <t, J^T c>
    for each input separately; the relative error is |lhs - rhs| / max(||Jt|| ||c||, ||t|| ||J^T c||).
    """
    inputs = list(inputs)
    xp = get_xp(*inputs)
    tol = tolerance(np.float64)
    eps = tol.fd_eps if eps is None else eps
    rtol = tol.fd_rtol if rtol is None else rtol
    for k, a in enumerate(inputs):
        if a is not None and a.dtype != np.float64:
            raise TypeError(f"adjoint_test needs float64 inputs: input {k} is {a.dtype}")
    out = f(*inputs)
    c = xp.asarray(rng.standard_normal(out.shape))
    grads = _as_tuple(vjp(c))
    if len(grads) != len(inputs):
        raise ValueError(f"vjp returned {len(grads)} gradients for {len(inputs)} inputs")
    if wrt is None:
        wrt = [k for k, g in enumerate(grads) if g is not None and inputs[k] is not None]
    results = []
    for k in wrt:
        if grads[k] is None or tuple(grads[k].shape) != tuple(inputs[k].shape):
            got = None if grads[k] is None else tuple(grads[k].shape)
            raise ValueError(
                f"gradient {k}: expected shape {tuple(inputs[k].shape)}, got {got}"
            )
        t = xp.asarray(rng.standard_normal(inputs[k].shape))
        plus, minus = list(inputs), list(inputs)
        plus[k] = inputs[k] + eps * t
        minus[k] = inputs[k] - eps * t
        jt = (f(*plus) - f(*minus)) / (2 * eps)
        lhs, rhs = _vdot(jt, c), _vdot(t, grads[k])
        # Cauchy-Schwarz scale: |<Jt, c>| <= ||Jt|| ||c||, so rounding in the difference
        # quotient is measured against the size of the terms, not against a lucky small lhs.
        scale = max(fro(jt) * fro(c), fro(t) * fro(grads[k]), 1e-300)
        rel = abs(lhs - rhs) / scale
        results.append(AdjointResult(wrt=k, lhs=lhs, rhs=rhs, rel_error=rel, rtol=rtol))
    return results


def linear_adjoint_check(
    A: Callable,
    AT: Callable,
    x_shape: tuple,
    rng: np.random.Generator,
    *,
    xp=np,
    dtype=np.float64,
    rtol: float | None = None,
) -> AdjointResult:
    """Exact adjoint check of a linear map: <A x, y> == <x, A^T y> to rounding.

    ``A(x)`` must be linear in x; ``AT(y)`` its claimed adjoint. The tolerance is the
    table's ``rtol`` for ``dtype`` (no finite differences are involved).
    """
    rtol = tolerance(dtype).rtol if rtol is None else rtol
    x = xp.asarray(rng.standard_normal(x_shape).astype(dtype))
    Ax = A(x)
    y = xp.asarray(rng.standard_normal(Ax.shape).astype(dtype))
    ATy = AT(y)
    if tuple(ATy.shape) != tuple(x_shape):
        raise ValueError(f"adjoint output: expected shape {tuple(x_shape)}, got {tuple(ATy.shape)}")
    lhs, rhs = _vdot(Ax, y), _vdot(x, ATy)
    scale = max(fro(Ax) * fro(y), fro(x) * fro(ATy), 1e-300)
    rel = abs(lhs - rhs) / scale
    return AdjointResult(wrt=0, lhs=lhs, rhs=rhs, rel_error=rel, rtol=rtol)
