"""Truncated higher-order SVD (HOSVD) and the per-mode truncation-rank rule of TDLRT.

ALGORITHM.md §2 steps 8-9 (modes 0-based in code): for each mode i, the thin SVD
``Mat_i(T) = P_i Σ_i Z_iᵀ`` with ``σ_{i,1} ≥ σ_{i,2} ≥ ⋯``; the rank r_i is the smallest r with
``(Σ_{j>r} σ_{i,j}²)^{1/2} ≤ ϑ`` (ϑ = τ‖T‖_F), clamped to [r_min,i, r_max,i]; then
``C = T ×_0 P_0[:, :r_0]ᵀ ⋯ ×_{d-1} P_{d-1}[:, :r_{d-1}]ᵀ`` and ``U_i = P_i[:, :r_i]``.
Only the left singular vectors are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import check_float_array, is_int
from ..backend import fro, get_xp, to_numpy
from .linalg import left_singular
from .tucker import Tucker, multi_mode_product, unfold

__all__ = ["HOSVDInfo", "hosvd", "tail_norms", "truncation_rank"]


def _per_mode(value, d: int, name: str) -> tuple:
    """An int or a sequence of d ints -> tuple of d Python ints (TypeError/ValueError otherwise)."""
    if is_int(value):
        return (int(value),) * d
    try:
        vals = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int or {d} ints (one per mode), got {value!r}") from None
    if len(vals) != d or not all(is_int(v) for v in vals):
        raise ValueError(f"{name}: expected an int or {d} ints (one per mode), got {value!r}")
    return tuple(int(v) for v in vals)


def tail_norms(sigma) -> np.ndarray:
    """Discarded-tail norms of a descending singular-value vector.

    Parameters
    ----------
    sigma : 1-d array of length k (NumPy or CuPy), σ_1 ≥ ⋯ ≥ σ_k ≥ 0

    Returns
    -------
    tails : numpy float64 array of length k + 1
        ``tails[r] = (Σ_{j>r} σ_j²)^{1/2}`` (1-based j), the error of keeping r values;
        ``tails[0]`` is the norm of sigma and ``tails[k] = 0``. Non-increasing in r.
    """
    s = to_numpy(sigma).astype(np.float64)
    m = float(s.max()) if s.size else 0.0
    if not (m > 0.0 and np.isfinite(m)):  # all zero (or not finite: the caller rejects it)
        m = 1.0
    s2 = (s / m) ** 2  # scaled: no overflow or underflow for finite sigma
    tail2 = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # k+1; sum of s2[r:]
    return m * np.sqrt(tail2)


def truncation_rank(sigma, theta, r_min: int = 1, r_max=None) -> int:
    """TDLRT rank rule: smallest r with ``(Σ_{j>r} σ_j²)^{1/2} ≤ ϑ``, clamped.

    Parameters
    ----------
    sigma : 1-d array, length k ≥ 1, descending, non-negative (singular values of one unfolding)
    theta : float ≥ 0, the absolute tolerance ϑ
    r_min : int ≥ 1, lower bound
    r_max : int ≥ r_min or None (default k)

    Returns
    -------
    int
        ``min(max(r_ϑ, r_min), r_max, k)``, r_ϑ the smallest admissible r in [0, k].
        Since there are only k singular vectors, the result never exceeds k, even when
        r_min > k.

    Notes
    -----
    ϑ = 0 keeps every non-zero σ (drops exact zeros only); ϑ ≥ ‖σ‖ gives r_min.
    """
    s = to_numpy(sigma)
    if s.ndim != 1 or s.shape[0] < 1:
        raise ValueError(f"truncation_rank: expected a non-empty 1-d sigma, got shape {s.shape}")
    if not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(np.diff(s) > 0):
        raise ValueError("truncation_rank: sigma must be finite, non-negative and descending")
    theta = float(theta)
    if not theta >= 0.0:  # also rejects NaN
        raise ValueError(f"truncation_rank: expected theta >= 0, got {theta}")
    if not is_int(r_min) or r_min < 1:
        raise ValueError(f"truncation_rank: expected an int r_min >= 1, got {r_min!r}")
    k = s.shape[0]
    if r_max is None:
        r_max = k
    if not is_int(r_max) or r_max < r_min:
        raise ValueError(
            f"truncation_rank: expected an int r_max >= r_min = {r_min}, got {r_max!r}"
        )
    return _rank_from_tails(tail_norms(s), theta, r_min, r_max)


def _rank_from_tails(tails, theta: float, r_min: int, r_max: int) -> int:
    """:func:`truncation_rank` from ``tails = tail_norms(sigma)`` (k + 1 entries, non-increasing)
    and checked arguments: ``min(max(r_ϑ, r_min), r_max, k)``, r_ϑ the first r with
    ``tails[r] <= ϑ``."""
    r_theta = int(np.argmax(tails <= theta))  # first admissible r; tails[k] = 0 <= theta
    return int(min(max(r_theta, r_min), r_max, len(tails) - 1))


@dataclass(frozen=True)
class HOSVDInfo:
    """Diagnostics of :func:`hosvd` (per mode i, 0-based).

    Attributes
    ----------
    singular_values : tuple of 1-d arrays (same library as T)
        σ_i of Mat_i(T), descending, length k_i = min(n_i, prod_{j≠i} n_j).
    ranks : tuple of ints, the chosen r_i.
    tails : tuple of floats, ``(Σ_{j>r_i} σ_{i,j}²)^{1/2}``, the discarded part per mode.
    bound : float, ``(Σ_i tails_i²)^{1/2}``: a-priori bound on ``‖T − T_r‖_F``.
    theta : float or None, the absolute tolerance ϑ = τ‖T‖_F (None unless tau was given).
    norm : float, ``‖T‖_F``.
    """

    singular_values: tuple
    ranks: tuple
    tails: tuple
    bound: float
    theta: float | None
    norm: float


def _check_tensor(T):
    check_float_array(T, "hosvd: T")
    if T.ndim < 1 or any(n == 0 for n in T.shape):
        raise ValueError(f"hosvd: expected a tensor with ndim >= 1 and no empty mode, got shape "
                         f"{tuple(T.shape)}")
    if not bool(get_xp(T).isfinite(T).all()):
        raise ValueError(f"hosvd: T (shape {tuple(T.shape)}) contains NaN or Inf")


def _check_bounds(r_min, r_max, shape) -> tuple:
    """Validate r_min / r_max; return both per mode, r_max capped at n_i, r_min at r_max_i."""
    d = len(shape)
    r_min = _per_mode(r_min, d, "hosvd: r_min")
    for i, rl in enumerate(r_min):
        if rl < 1:
            raise ValueError(f"hosvd: mode {i}: expected r_min >= 1, got {rl}")
    if r_max is None:  # default n_i: a larger r_min is simply capped
        r_max = shape
    else:
        r_max = _per_mode(r_max, d, "hosvd: r_max")
        for i, (rl, rm) in enumerate(zip(r_min, r_max)):
            if rm < rl:
                raise ValueError(f"hosvd: mode {i}: r_max = {rm} is smaller than r_min = {rl}")
    r_max = tuple(min(rm, n) for rm, n in zip(r_max, shape))
    return tuple(min(rl, rm) for rl, rm in zip(r_min, r_max)), r_max


def _check_ranks(ranks, shape) -> tuple:
    ranks = _per_mode(ranks, len(shape), "hosvd: ranks")
    for i, (r, n) in enumerate(zip(ranks, shape)):
        if not 1 <= r <= n:
            raise ValueError(f"hosvd: mode {i}: rank {r} out of range, expected 1 <= rank <= "
                             f"n_{i} = {n}")
    return ranks


def _check_tau(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise TypeError(f"hosvd: expected a real number tau, got {tau!r}")
    tau = float(tau)
    if not (math.isfinite(tau) and tau >= 0.0):
        raise ValueError(f"hosvd: expected a finite tau >= 0, got {tau}")
    return tau


def hosvd(T, *, ranks=None, tau=None, r_min=1, r_max=None):
    """Truncated HOSVD of a dense tensor.

    Parameters
    ----------
    T : array, shape (n_0, ..., n_{d-1}), float32/float64, finite
    ranks : int or d ints, optional
        Fixed ranks, each in [1, n_i]. Excludes ``tau``, ``r_min``, ``r_max``.
    tau : float ≥ 0, optional
        Relative tolerance; ϑ = τ‖T‖_F and r_i = :func:`truncation_rank` (σ_i, ϑ, r_min_i, r_max_i).
        τ = 0 keeps everything but exact zeros; τ ≥ 1 gives r_min.
    r_min : int or d ints, each ≥ 1
        Lower rank bounds for the τ rule (capped at n_i).
    r_max : int or d ints, optional
        Upper rank bounds (≥ r_min; default and cap n_i) for the τ rule and the full-rank default.

    With neither ``ranks`` nor ``tau``: full rank, r_i = min(n_i, r_max_i).

    Every rank is finally capped at k_i = min(n_i, prod_{j≠i} n_j), the number of singular
    vectors of Mat_i(T) (columns beyond k_i would only carry σ = 0), and r_min_i is capped at
    n_i. So r_i may be below a requested rank or below r_min_i when n_i > prod_{j≠i} n_j or
    r_min_i > n_i; the chosen ranks are in the info.

    Returns
    -------
    tucker : :class:`~refdlrt.tensor.tucker.Tucker`
        core shape (r_0, ..., r_{d-1}); factors P_i[:, :r_i], orthonormal columns.
    info : :class:`HOSVDInfo`

    Notes
    -----
    ``Mat_i(T) = P_i Σ_i Z_iᵀ``; ``C = T ×_0 P_0[:, :r_0]ᵀ ⋯ ×_{d-1} P_{d-1}[:, :r_{d-1}]ᵀ``.
    Error: ``max_i tails_i ≤ ‖T − C ×_i U_i‖_F ≤ (Σ_i tails_i²)^{1/2} = bound``
    (De Lathauwer, De Moor & Vandewalle 2000); with the τ rule ``bound ≤ √d ϑ`` unless r_max
    capped a rank below r_ϑ.
    """
    _check_tensor(T)
    shape = tuple(int(n) for n in T.shape)
    d = len(shape)
    if ranks is not None and tau is not None:
        raise ValueError("hosvd: give ranks or tau, not both")
    if ranks is not None:
        if _per_mode(r_min, d, "hosvd: r_min") != (1,) * d or r_max is not None:
            raise ValueError("hosvd: r_min / r_max apply to the tau and full-rank rules; "
                             "with explicit ranks give neither")
        ranks = _check_ranks(ranks, shape)
    r_min, r_max = _check_bounds(r_min, r_max, shape)
    norm = fro(T)
    theta = None if tau is None else _check_tau(tau) * norm

    bases, sigmas, chosen, tails = [], [], [], []
    for i in range(d):
        P, s = left_singular(unfold(T, i))  # n_i, k_i; k_i (finite, descending, >= 0)
        k, t = int(s.shape[0]), tail_norms(s)  # t: k_i + 1
        if ranks is not None:
            r = min(ranks[i], k)
        elif theta is not None:
            r = _rank_from_tails(t, theta, r_min[i], r_max[i])  # = truncation_rank(s, ...)
        else:
            r = min(r_max[i], k)
        bases.append(P[:, :r])  # n_i, r_i
        sigmas.append(s)
        chosen.append(r)
        tails.append(float(t[r]))
    core = multi_mode_product(T, bases, transpose=True)  # r_0, ..., r_{d-1}
    info = HOSVDInfo(
        singular_values=tuple(sigmas),
        ranks=tuple(chosen),
        tails=tuple(tails),
        bound=math.sqrt(sum(t * t for t in tails)),
        theta=theta,
        norm=norm,
    )
    return Tucker(core, tuple(bases)), info
