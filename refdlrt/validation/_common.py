"""Shared pieces of the claims: norms, plotting, and test problems with exactly known flows."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..backend import get_xp, to_numpy
from ..tolerances import tolerance
from ..tucker import Tucker, multi_mode_product

TOL = tolerance(np.float64)


def fro(a) -> float:
    """||a||_F as a Python float (any backend)."""
    xp = get_xp(a)
    return float(xp.linalg.norm(a.reshape(-1)))


def dense(Y):
    """The dense tensor of a Tucker tensor (same backend)."""
    return Y.to_tensor()


def to_xp(Y: Tucker, xp) -> Tucker:
    return Tucker(xp.asarray(Y.core), tuple(xp.asarray(U) for U in Y.factors))


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: str, fname: str) -> str:
    """Save a figure as ``out/fname`` and close it; return ``fname`` (relative to ``out``)."""
    plt = pyplot()
    os.makedirs(out, exist_ok=True)
    fig.tight_layout()
    fig.savefig(os.path.join(out, fname), dpi=90)
    plt.close(fig)
    return fname


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def orthogonal(n: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """n x r matrix with orthonormal columns (Haar-distributed)."""
    Q, R = np.linalg.qr(rng.standard_normal((n, r)))
    return Q * np.sign(np.diag(R))


def graded_core(singular_values, rng: np.random.Generator) -> np.ndarray:
    """An r x ... x r core (d = 3) whose every unfolding has exactly the given singular values.

    Notes
    -----
    The superdiagonal tensor D[j, j, j] = s_j has Mat_i(D) = [diag(s) | 0] (up to a column
    permutation) in every mode; rotating each mode by an orthogonal O_i keeps the singular
    values: C = D x_0 O_0 x_1 O_1 x_2 O_2.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    r = s.shape[0]
    D = np.zeros((r, r, r))
    D[np.arange(r), np.arange(r), np.arange(r)] = s
    return multi_mode_product(D, [orthogonal(r, r, rng) for _ in range(3)])


@dataclass(frozen=True)
class KroneckerSumProblem:
    """L(W) = ½ <W, Σ_i W x_i A_i> with symmetric A_i: a gradient flow that keeps the Tucker rank.

    grad L(W) = Σ_i W x_i A_i; the exact gradient flow is W(t) = W(0) x_0 e^{-t A_0} ... x_{d-1}
    e^{-t A_{d-1}} (the mode products commute), so a Tucker tensor of rank ρ stays of rank ρ:
    the gradient is tangent to the manifold along the flow (ε = 0). L = Σ_i ||A_i||_2.
    """

    As: tuple
    smoothness: float

    @property
    def shape(self) -> tuple:
        return tuple(int(A.shape[0]) for A in self.As)

    def gradient(self, W):
        d = len(self.As)
        return sum(multi_mode_product(W, [A if j == i else None for j in range(d)])
                   for i, A in enumerate(self.As))

    def value(self, W) -> float:
        return 0.5 * float((W * self.gradient(W)).sum())

    def flow(self, W0, t: float):
        """W(t) = W0 x_i exp(-t A_i), with exp from the eigendecomposition A_i = V Λ V^T."""
        xp = get_xp(W0)
        mats = []
        for A in self.As:
            lam, V = xp.linalg.eigh(A)
            mats.append((V * xp.exp(-t * lam)[None, :]) @ V.T)
        return multi_mode_product(W0, mats)


def kronecker_sum_problem(shape, rng: np.random.Generator, *, L: float = 1.0, xp=np):
    """Symmetric positive semi-definite A_i = B B^T scaled so that Σ_i ||A_i||_2 = L."""
    As = []
    for n in shape:
        B = rng.standard_normal((n, n))
        A = B @ B.T
        As.append(A * (L / len(shape)) / np.linalg.norm(A, 2))
    return KroneckerSumProblem(tuple(xp.asarray(A) for A in As), float(L))


def record(trace, **values):
    """Append the values (floats) to the lists of ``trace``."""
    for k, v in values.items():
        trace.setdefault(k, []).append(float(v) if v is not None else math.nan)


def numpy_tree(obj):
    """Arrays of a nested structure moved to NumPy (for details dicts)."""
    if isinstance(obj, dict):
        return {k: numpy_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(numpy_tree(v) for v in obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return to_numpy(obj)
    return obj
