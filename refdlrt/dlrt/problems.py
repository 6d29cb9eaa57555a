"""Synthetic losses with known constants, for tests and validation of the integrator.

Each problem gives ``value(W)``, ``gradient(W)`` and its smoothness constant
``smoothness`` = L (||grad L(A) - grad L(B)|| <= L ||A - B||).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import get_xp
from ..tensor.tucker import Tucker, multi_mode_product

__all__ = [
    "QuadraticProblem",
    "TargetProblem",
    "LinearProblem",
    "random_quadratic",
    "random_tucker",
    "KroneckerSumProblem",
    "kronecker_sum_problem",
]


@dataclass(frozen=True)
class QuadraticProblem:
    """L(W) = ½ ||A vec(W) - b||², A of shape (m, N), N = Π n_i.

    grad L(W) = Ten(A^T (A vec(W) - b)); the Hessian is A^T A, so L = ||A||_2².
    """

    A: object
    b: object
    shape: tuple
    smoothness: float

    def value(self, W) -> float:
        r = self.A @ W.reshape(-1) - self.b
        return 0.5 * float((r * r).sum())

    def gradient(self, W):
        return (self.A.T @ (self.A @ W.reshape(-1) - self.b)).reshape(self.shape)

    def contraction(self, lr: float) -> float:
        """ρ = ||I - λ A^T A||_2: the factor by which one dense GD step can expand a difference."""
        xp = get_xp(self.A)
        s2 = xp.linalg.svd(self.A, compute_uv=False) ** 2
        rho = float(xp.abs(1 - lr * s2).max())
        return max(rho, 1.0) if self.A.shape[0] < self.A.shape[1] else rho


@dataclass(frozen=True)
class TargetProblem:
    """L(W) = ½ ||W - T||_F²: gradient flow towards a target T; L = 1."""

    T: object
    smoothness: float = 1.0

    @property
    def shape(self) -> tuple:
        return tuple(self.T.shape)

    def value(self, W) -> float:
        D = W - self.T
        return 0.5 * float((D * D).sum())

    def gradient(self, W):
        return W - self.T


@dataclass(frozen=True)
class LinearProblem:
    """L(W) = <G0, W>: a constant gradient G0; L = 0 (used by the exactness test)."""

    G0: object
    smoothness: float = 0.0

    @property
    def shape(self) -> tuple:
        return tuple(self.G0.shape)

    def value(self, W) -> float:
        return float((self.G0 * W).sum())

    def gradient(self, W):
        return self.G0


def random_quadratic(shape, rng: np.random.Generator, *, m=None, L=1.0, mu=0.0, xp=np, W_star=None):
    """A random quadratic ½||A vec(W) - b||² with ||A||_2² = L exactly.

    A = Q_1 diag(s) Q_2^T with Haar-random orthogonal Q_1, Q_2 and singular values
    s spread uniformly in [sqrt(mu), sqrt(L)] with s_max = sqrt(L). b = A vec(W_star),
    W_star standard normal unless given (so the minimum value is 0).
    """
    shape = tuple(int(n) for n in shape)
    N = int(np.prod(shape))
    m = N if m is None else int(m)
    if L <= 0 or mu < 0 or mu > L:
        raise ValueError(f"expected 0 <= mu <= L and L > 0, got mu={mu}, L={L}")
    k = min(m, N)
    Q1, _ = np.linalg.qr(rng.standard_normal((m, k)))
    Q2, _ = np.linalg.qr(rng.standard_normal((N, k)))
    s = np.sqrt(np.linspace(L, mu, k)) if k > 1 else np.array([np.sqrt(L)])
    A = (Q1 * s) @ Q2.T
    W_star = rng.standard_normal(shape) if W_star is None else np.asarray(W_star)
    b = A @ W_star.reshape(-1)
    return QuadraticProblem(A=xp.asarray(A), b=xp.asarray(b), shape=shape, smoothness=float(L))


def random_tucker(shape, ranks, rng: np.random.Generator, *, xp=np, core_scale=1.0):
    """A random Tucker tensor with orthonormal factors and a Gaussian core of the given ranks."""
    factors = []
    for n, r in zip(shape, ranks):
        if not 1 <= r <= n:
            raise ValueError(f"rank {r} outside [1, {n}] for a mode of size {n}")
        Q, _ = np.linalg.qr(rng.standard_normal((n, r)))
        factors.append(xp.asarray(Q))
    core = xp.asarray(core_scale * rng.standard_normal(tuple(ranks)))
    return Tucker(core, tuple(factors))


@dataclass(frozen=True)
class KroneckerSumProblem:
    """L(W) = ½ <W, Σ_i W x_i A_i> with symmetric A_i: a gradient flow that keeps the Tucker rank.

    grad L(W) = Σ_i W x_i A_i; the exact gradient flow is W(t) = W(0) x_0 e^{-t A_0} ... x_{d-1}
    e^{-t A_{d-1}} (the mode products commute), so a Tucker tensor of rank r stays of rank r:
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
