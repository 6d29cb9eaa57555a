"""Shared pieces of the claims: norms, plotting, and test problems with exactly known flows."""

from __future__ import annotations

import math
import os

import numpy as np

from ..backend import fro, get_xp, to_numpy  # noqa: F401 - fro is shared by the claims
from ..dlrt.problems import kronecker_sum_problem  # noqa: F401 - used by the claims
from ..tensor.tucker import Tucker, multi_mode_product
from ..tolerances import tolerance

TOL = tolerance(np.float64)


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
