"""Tucker tensor algebra: unfolding, folding, mode products and the Tucker format.

Conventions (ALGORITHM.md §1), modes are 0-based in code:

* mode-i unfolding ``Mat_i(T) = moveaxis(T, i, 0).reshape(n_i, -1)`` (C order), so the
  columns of ``Mat_i(T)`` run over the remaining modes in increasing order, last mode fastest;
* mode-i product ``T ×_i A`` with ``A`` of shape (m, n_i): ``Mat_i(T ×_i A) = A Mat_i(T)``;
* Tucker tensor ``Y = C ×_0 U_0 ×_1 U_1 ⋯ ×_{d-1} U_{d-1}``, and with this unfolding
  ``Mat_i(Y) = U_i Mat_i(C) (⊗_{j≠i} U_j)ᵀ`` (Kronecker product over j ≠ i in increasing order).

Names follow Kolda & Bader / TensorLy (``unfold``, ``fold``, ``mode_dot`` is ``mode_product``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._checks import check_float_array, is_int
from ..backend import get_xp

__all__ = [
    "Tucker",
    "fold",
    "mode_product",
    "multi_mode_product",
    "tucker_to_tensor",
    "unfold",
]

# mode_product takes one GEMM with A ⊗ I_post instead of pre small GEMMs when the modes after
# the product hold at most _KRON_MAX_POST entries and those before at least _KRON_MIN_PRE
# (measured, float32, 2 threads, mode 2 of a kernel-shaped core: 64 x 64 x 3 x 3 389 -> 56 us,
# 32 x 32 x 3 x 3 109 -> 39 us, 15 x 15 x 3 x 3 49 -> 18 us, 16 x 6 x 5 x 5 28 -> 22 us,
# 16 x 16 x 3 x 8 50 -> 23 us; about even at 8 x 8 x 3 x 3, slower below: 4 x 4 x 3 x 3 8 -> 20 us)
_KRON_MAX_POST, _KRON_MIN_PRE = 8, 64


def _check_mode(mode, ndim: int, shape) -> int:
    """Return ``mode`` as a Python int in [0, ndim); raise naming the mode and the shape."""
    if not is_int(mode):
        raise TypeError(f"mode: expected an int, got {mode!r}")
    if not 0 <= mode < ndim:
        raise ValueError(
            f"mode {mode} out of range: expected 0 <= mode < {ndim} for a tensor of shape "
            f"{tuple(shape)}"
        )
    return int(mode)


def unfold(T, mode: int):
    """Mode-``mode`` unfolding ``Mat_mode(T)``.

    Parameters
    ----------
    T : array, shape (n_0, ..., n_{d-1})
    mode : int, 0 <= mode < d

    Returns
    -------
    M : array, shape (n_mode, prod_{j != mode} n_j)

    Notes
    -----
    ``Mat_i(T) = moveaxis(T, i, 0).reshape(n_i, -1)`` in C order: entry
    ``T[k_0, ..., k_{d-1}]`` goes to row ``k_i`` and column
    ``sum_{j != i} k_j prod_{l > j, l != i} n_l``.
    """
    mode = _check_mode(mode, T.ndim, T.shape)
    n = T.shape[mode]
    rest = math.prod(s for j, s in enumerate(T.shape) if j != mode)
    # moveaxis(T, mode, 0) as a transpose (the same view, without moveaxis's argument handling)
    order = (mode,) + tuple(j for j in range(T.ndim) if j != mode)
    return T.transpose(order).reshape(n, rest)  # n_i, prod_{j!=i} n_j


def fold(M, mode: int, shape):
    """Inverse of :func:`unfold`: ``Ten_mode(M)`` with the target ``shape``.

    Parameters
    ----------
    M : array, shape (shape[mode], prod_{j != mode} shape[j])
    mode : int, 0 <= mode < len(shape)
    shape : tuple of ints, the shape of the folded tensor

    Returns
    -------
    T : array, shape ``shape``, with ``unfold(T, mode) == M``.
    """
    xp = get_xp(M)
    shape = tuple(int(s) for s in shape)
    mode = _check_mode(mode, len(shape), shape)
    rest = tuple(s for j, s in enumerate(shape) if j != mode)
    expected = (shape[mode], math.prod(rest))
    if M.ndim != 2 or tuple(M.shape) != expected:
        raise ValueError(
            f"fold: mode {mode} of target shape {shape} needs a matrix of shape {expected}, "
            f"got shape {tuple(M.shape)}"
        )
    return xp.moveaxis(M.reshape((shape[mode],) + rest), 0, mode)  # shape


def mode_product(T, A, mode: int):
    """Mode-``mode`` product ``T ×_mode A``.

    Parameters
    ----------
    T : array, shape (n_0, ..., n_{d-1})
    A : array, shape (m, n_mode)
    mode : int, 0 <= mode < d

    Returns
    -------
    array, shape of ``T`` with ``n_mode`` replaced by ``m``.

    Notes
    -----
    ``Mat_i(T ×_i A) = A Mat_i(T)``, i.e.
    ``(T ×_i A)[k_0, .., l, .., k_{d-1}] = sum_k A[l, k] T[k_0, .., k, .., k_{d-1}]``.
    """
    xp = get_xp(T, A)
    mode = _check_mode(mode, T.ndim, T.shape)
    if A.ndim != 2 or A.shape[1] != T.shape[mode]:
        raise ValueError(
            f"mode_product: mode {mode} of T has size {T.shape[mode]} (T shape "
            f"{tuple(T.shape)}), so A must have shape (m, {T.shape[mode]}); got A shape "
            f"{tuple(A.shape)}"
        )
    shape = tuple(T.shape)
    pre, n, m = math.prod(shape[:mode]), shape[mode], A.shape[0]
    new_shape = shape[:mode] + (m,) + shape[mode + 1:]
    if mode == T.ndim - 1:  # last mode: one GEMM on the rows
        return (T.reshape(pre, n) @ A.T).reshape(new_shape)  # pre, m
    post = math.prod(shape[mode + 1:])
    if post <= _KRON_MAX_POST and pre >= _KRON_MIN_PRE:
        # a kernel's spatial mode (post = kw): pre GEMMs of n x post would cost more in calls
        # than in arithmetic, so one GEMM with A ⊗ I_post (the zeros add exactly for finite
        # T and A; an Inf in either spreads as NaN through its rows here)
        I = xp.eye(post, dtype=A.dtype)
        A_post = (A[:, None, :, None] * I[None, :, None, :]).reshape(m * post, n * post)  # A ⊗ I
        return (T.reshape(pre, n * post) @ A_post.T).reshape(new_shape)  # pre, m post
    # the rest as pre GEMMs A (m x n) times (n x post) blocks (one GEMM for mode 0); no
    # transposed copies, unlike tensordot + moveaxis
    return xp.matmul(A, T.reshape(pre, n, post)).reshape(new_shape)


def multi_mode_product(T, mats, *, skip=None, transpose: bool = False):
    """Product with a matrix in every mode: ``T ×_0 A_0 ×_1 A_1 ⋯ ×_{d-1} A_{d-1}``.

    Parameters
    ----------
    T : array, d-way
    mats : sequence of d entries, each an array or None
        ``mats[i]`` has shape (m_i, n_i) (or (n_i, m_i) when ``transpose``); None means
        the identity (mode i left untouched).
    skip : int or None
        A mode left untouched whatever ``mats[skip]`` is.
    transpose : bool
        Use ``mats[i].T`` instead of ``mats[i]``.

    Returns
    -------
    array, mode i of size m_i for every applied mode.

    Notes
    -----
    Products on distinct modes commute, so the order is immaterial. Typical uses:
    ``multi_mode_product(C, Us)`` is the Tucker tensor ``C ×_i U_i``;
    ``multi_mode_product(G, Us, skip=i, transpose=True)`` is ``G ×_{j≠i} U_jᵀ``.
    """
    mats = tuple(mats)
    if len(mats) != T.ndim:
        raise ValueError(
            f"multi_mode_product: expected one matrix (or None) per mode of T, i.e. {T.ndim} "
            f"for T shape {tuple(T.shape)}; got {len(mats)}"
        )
    if skip is not None:
        skip = _check_mode(skip, T.ndim, T.shape)
    out = T
    for i, A in enumerate(mats):
        if A is None or i == skip:
            continue
        out = mode_product(out, A.T if transpose else A, i)
    return out


def tucker_to_tensor(core, factors):
    """Dense tensor ``C ×_0 U_0 ×_1 U_1 ⋯ ×_{d-1} U_{d-1}``.

    Parameters
    ----------
    core : array, shape (r_0, ..., r_{d-1})
    factors : sequence of d arrays, ``factors[i]`` of shape (n_i, r_i)

    Returns
    -------
    array, shape (n_0, ..., n_{d-1})
    """
    factors = tuple(factors)
    if len(factors) != core.ndim:
        raise ValueError(
            f"tucker_to_tensor: core of shape {tuple(core.shape)} needs {core.ndim} factors, "
            f"got {len(factors)}"
        )
    return multi_mode_product(core, factors)


@dataclass(frozen=True)
class Tucker:
    """A tensor in Tucker format ``Y = C ×_0 U_0 ⋯ ×_{d-1} U_{d-1}``.

    Attributes
    ----------
    core : array, shape (r_0, ..., r_{d-1})
        The core tensor C.
    factors : tuple of d arrays, ``factors[i]`` of shape (n_i, r_i)
        The mode bases U_i (orthonormal columns in TDLRT, not enforced here).

    Raises
    ------
    ValueError
        If ``core.ndim != len(factors)``, if there are no factors, or a factor is not 2-d
        or its column count differs from ``core.shape[i]``.
    TypeError
        If an array is not float32/float64, dtypes differ, or NumPy and CuPy are mixed.
    """

    core: object
    factors: tuple

    def __post_init__(self):
        factors = tuple(self.factors)
        object.__setattr__(self, "factors", factors)
        core = self.core
        check_float_array(core, "Tucker core")
        if len(factors) < 1:
            raise ValueError("Tucker: expected at least one factor, got 0")
        if core.ndim != len(factors):
            raise ValueError(
                f"Tucker: core.ndim must equal the number of factors; got core shape "
                f"{tuple(core.shape)} (ndim {core.ndim}) and {len(factors)} factors"
            )
        for i, U in enumerate(factors):
            check_float_array(U, f"Tucker factor {i}")
            if U.ndim != 2 or U.shape[1] != core.shape[i]:
                raise ValueError(
                    f"Tucker factor {i}: expected shape (n_{i}, {core.shape[i]}) to match core "
                    f"shape {tuple(core.shape)} in mode {i}, got shape {tuple(U.shape)}"
                )
            if U.dtype != core.dtype:
                raise TypeError(
                    f"Tucker factor {i}: expected dtype {core.dtype} (the core's), got {U.dtype}"
                )
        get_xp(core, *factors)  # raises TypeError on mixed numpy / cupy

    @property
    def ndim(self) -> int:
        """Order d of the tensor."""
        return len(self.factors)

    @property
    def ranks(self) -> tuple:
        """Tucker rank (r_0, ..., r_{d-1})."""
        return tuple(int(r) for r in self.core.shape)

    @property
    def shape(self) -> tuple:
        """Shape (n_0, ..., n_{d-1}) of the represented dense tensor."""
        return tuple(int(U.shape[0]) for U in self.factors)

    @property
    def dtype(self):
        return self.core.dtype

    @property
    def n_params(self) -> int:
        """Stored numbers: ``sum_i n_i r_i + prod_i r_i``."""
        return sum(n * r for n, r in zip(self.shape, self.ranks)) + math.prod(self.ranks)

    @property
    def dense_params(self) -> int:
        """Numbers in the dense tensor: ``prod_i n_i``."""
        return math.prod(self.shape)

    @property
    def compression(self) -> float:
        """Compression rate ``1 - n_params / dense_params`` (negative if Tucker is larger)."""
        return 1.0 - self.n_params / self.dense_params

    def copy(self) -> "Tucker":
        """A Tucker tensor holding copies of the core and the factors (a snapshot: changing this
        one's arrays in place leaves the copy as it was)."""
        return Tucker(self.core.copy(), tuple(U.copy() for U in self.factors))

    def to_tensor(self):
        """The dense tensor ``C ×_0 U_0 ⋯ ×_{d-1} U_{d-1}``, shape (n_0, ..., n_{d-1})."""
        return tucker_to_tensor(self.core, self.factors)
