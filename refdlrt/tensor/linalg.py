"""Small dense linear-algebra helpers: orthonormal bases, sign-fixed QR, orthonormality error.

All functions take NumPy or CuPy matrices and return arrays of the same library.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_float_array, check_ndim
from ..backend import get_xp, one_blas_thread, to_numpy
from ..tolerances import tolerance

__all__ = ["check_orthonormal", "left_singular", "max_orthonormality_error", "orth",
           "orthonormality_error", "orthonormality_errors", "qr_signfixed", "svd_thin"]


def _check_matrix(A, name: str):
    check_float_array(A, name)
    check_ndim(A, 2, name, "rows, columns")


# A CuPy matrix of at most this many entries takes its SVD from LAPACK on the host, copied
# there and back. Measured on an H200 (benchmarks/bench_gpu.py's linalg section, float32, one
# call at a time, cuSOLVER against the host with both copies): SVDs of 32 x 32 to 576 x 32
# 1.6-3.7x faster on the host, 1024 x 64 (2**16 entries) 1.4x slower. Single QRs and eighs
# were faster on the host at some small sizes (up to 1.6x at 64 x 64) and far slower at others
# (QR of 576 x 32: 1.2-1.5 ms against 0.23-0.33), and sending every small QR, eigh and SVD to
# the host made the whole TDLRT layer update 1.7-2x slower (20-27 ms against 11.7-12.9 ms, the
# second run in benchmarks/results/gpu-h200/), so only the SVDs go.
_HOST_SVD_MAX = 2**15


def svd_thin(A):
    """Thin SVD ``A = P diag(s) Zᵀ`` (``full_matrices=False``) by LAPACK on one BLAS thread
    (:func:`refdlrt.backend.one_blas_thread`: the integrator's matrices are small). A CuPy
    matrix of at most ``_HOST_SVD_MAX`` entries is copied to the host for it and the factors
    copied back; a larger one takes cuSOLVER's SVD."""
    xp = get_xp(A)
    if xp is not np and A.size > _HOST_SVD_MAX:
        return xp.linalg.svd(A, full_matrices=False)
    with one_blas_thread(np):
        out = np.linalg.svd(to_numpy(A), full_matrices=False)
    return out if xp is np else tuple(xp.asarray(f) for f in out)


def _descending_eigh(M):
    """Eigen-decomposition of a symmetric positive semi-definite M = V diag(s²) Vᵀ, largest first.

    Returns (V, s) with s = sqrt(max(eigenvalue, 0)) descending (rounding can make the smallest
    eigenvalues of a Gram matrix slightly negative)."""
    xp = get_xp(M)
    w, V = xp.linalg.eigh(M)  # ascending
    return V[:, ::-1], xp.sqrt(xp.maximum(w[::-1], 0.0))


def left_singular(A):
    """Left singular vectors and singular values ``(P, s)`` of ``A = P diag(s) Zᵀ`` (thin; Z
    not formed), s descending.

    float64 (and tall float32) matrices: LAPACK's SVD (:func:`svd_thin`). A wide or square
    float32 matrix (m ≤ n) is decomposed through its Gram matrix formed in float64,
    ``A Aᵀ = P diag(s²) Pᵀ`` (:func:`_descending_eigh`), 3-4x faster than the SVD at the
    integrator's sizes (30 x 270: 0.24 vs 0.86 ms). This is as accurate as a float32 SVD: the
    eigenvalues are exact to about eps₆₄ σ₁², so s_j to about 1.5e-8 σ₁ and P's columns to
    eps₆₄ σ₁² / gap, both below float32's own rounding (eps₃₂ σ₁ = 1.2e-7 σ₁, eps₃₂ σ₁ / gap)
    for every σ_j above 1e-9 σ₁. A float64 matrix would lose half its digits this way, so it
    keeps the SVD (and with it every float64 validation).

    A must be finite (its callers, :func:`~refdlrt.tensor.hosvd.hosvd` and :func:`orth`, check).

    Returns
    -------
    P : (m, min(m, n)), orthonormal columns;  s : (min(m, n),), same dtype as A.
    """
    xp = get_xp(A)
    m, n = A.shape
    if A.dtype == xp.float32 and m <= n:
        A64 = A.astype(xp.float64)
        P, s = _descending_eigh(A64 @ A64.T)  # m x m, m
        return P.astype(A.dtype), s.astype(A.dtype)
    P, s, _ = svd_thin(A)
    return P, s


def orth(A, *, rtol=None):
    """Orthonormal basis of exactly ``range(A)``, from its singular values and vectors.

    Parameters
    ----------
    A : array, shape (n, m), float32 or float64, finite
    rtol : float or None
        Relative cut-off: singular values ``σ_j > rtol * σ_max`` are kept.
        Default ``max(n, m) * finfo(A.dtype).eps`` (the numerical-rank convention of
        ``numpy.linalg.matrix_rank`` and ``scipy.linalg.orth``).

    Returns
    -------
    Q : array, shape (n, k)
        Orthonormal columns (``QᵀQ = I_k``) spanning range(A); k is the numerical rank.
        The zero matrix (and any A with no columns or rows) gives ``k = 0``, i.e. shape (n, 0);
        callers must handle an empty basis.

    Notes
    -----
    ``A = P Σ Zᵀ`` (thin SVD), ``Q = P[:, :k]`` with ``k = #{j : σ_j > rtol σ_1}``.
    Unlike a QR of ``A``, the result never contains columns outside range(A) when A is
    rank-deficient. For float32 with rtol ≥ 1e-6 (the default for n or m ≥ 9) P and Σ come from
    the float64 Gram matrix: :func:`left_singular` for a wide or square A, and for a tall A the
    Gram matrix of its columns, ``AᵀA`` (:func:`_orth_tall_by_gram`), which gives an orthonormal
    basis of the same span that need not be P's columns. Otherwise (float64, or a smaller rtol,
    below the Gram route's σ floor of about 1.5e-8 σ_1) LAPACK's SVD.
    """
    _check_matrix(A, "orth: A")
    xp = get_xp(A)
    n, m = A.shape
    if rtol is None:
        rtol = max(n, m) * float(np.finfo(A.dtype).eps)
    rtol = float(rtol)
    if not rtol >= 0.0:  # also rejects NaN
        raise ValueError(f"orth: expected rtol >= 0, got {rtol}")
    if min(n, m) == 0:
        return xp.zeros((n, 0), dtype=A.dtype)
    if not bool(xp.isfinite(A).all()):
        raise ValueError(f"orth: A (shape {tuple(A.shape)}) contains NaN or Inf")
    if A.dtype == xp.float32 and rtol >= _GRAM_RTOL:  # the float64 Gram route
        if n > m:
            return _orth_tall_by_gram(A, rtol)
        P, s = left_singular(A)  # n, n; n
    else:  # the Gram route's σ floor (~1.5e-8 σ_1) would keep noise directions below this rtol
        P, s, _ = svd_thin(A)  # n, min(n,m); min(n,m)
    k = int((s > rtol * s[0]).sum())  # s[0] = σ_max; zero matrix -> k = 0
    return P[:, :k]  # n, k


# The smallest rtol for which orth of a float32 matrix takes the Gram route: the Gram
# matrix's σ are exact to about sqrt(eps₆₄) σ_1 = 1.5e-8 σ_1, 1.5 % of the cut at this rtol.
_GRAM_RTOL = 1e-6


# The float64 orthonormality error, eps₆₄ (σ_1 / σ_k)², above which the Gram route's Q takes a
# second pass: 2^-27, an eighth of float32's unit roundoff 2^-24, so the error left is at the
# scale of the float32 cast's own (vgg_small's fc1, a 3136 x 38 block at σ_1 / σ_k = 2660: 1.1e-9
# in float64, 3.25e-8 after the cast against 3.21e-8 with the pass, which cost 0.9 of the 2.1 ms;
# over 560 adversarial matrices up to 7x the error with the pass forced near the threshold, at
# most 5e-7, below 0.004 of the float32 tolerance).
_REORTH_ERROR = 2.0**-27


def _orth_tall_by_gram(A, rtol: float):
    """:func:`orth` of a tall float32 A (n x m, n > m) through its float64 Gram matrix.

    ``AᵀA = Z Σ² Zᵀ``; k = #{σ_j > rtol σ_1}; ``Q = A Z_k Σ_k⁻¹`` spans the same space as the
    SVD's P[:, :k]. Its columns are orthonormal to about eps₆₄ (σ_1 / σ_k)², so when that exceeds
    ``_REORTH_ERROR`` (an eighth of float32's unit roundoff) Q is re-orthonormalised once the
    same way, ``Q (QᵀQ)^{-1/2}`` by the eigen-decomposition of QᵀQ (κ(Q) ≈ 1 then, so the second
    pass is exact to eps₆₄). Below it the error left is at the scale of the float32 cast's own,
    far inside the float32 tolerance (see ``_REORTH_ERROR``). With the default
    rtol = n eps₃₂ there is never a second pass for n >= 1449 (σ_1 / σ_k < 1 / rtol = 2²³ / n,
    so eps₆₄ (σ_1 / σ_k)² < 2⁻⁶ / n² <= 2⁻²⁷).
    """
    xp = get_xp(A)
    A64 = A.astype(xp.float64)
    Z, s = _descending_eigh(A64.T @ A64)  # m x m, m
    k = int((s > rtol * s[0]).sum())  # zero matrix: s[0] = 0, k = 0
    Q = (A64 @ Z[:, :k]) / s[:k]  # n, k
    if k and float(s[0] / s[k - 1]) ** 2 * np.finfo(np.float64).eps > _REORTH_ERROR:
        Q = _reorthonormalise(Q)
    return Q.astype(A.dtype)


def _reorthonormalise(Q):
    """``Q E Λ^{-1/2}`` with ``QᵀQ = E Λ Eᵀ``: orthonormal columns spanning range(Q), for a Q
    whose columns are already nearly orthonormal (then Λ ≈ I and the result is exact to
    rounding)."""
    E, ell = _descending_eigh(Q.T @ Q)  # k x k, k (ell = sqrt(Λ) ≈ 1)
    return (Q @ E) / ell  # n, k


def qr_signfixed(A):
    """Reduced QR with a non-negative diagonal of R.

    Parameters
    ----------
    A : array, shape (n, m)

    Returns
    -------
    Q : array, shape (n, k), k = min(n, m), orthonormal columns
    R : array, shape (k, m), upper triangular with ``diag(R) >= 0``

    Notes
    -----
    ``A = Q R``; with ``D = diag(sign(R_jj))`` (sign 0 taken as +1) we return ``(Q D, D R)``.
    For full-column-rank A this is the unique QR factorisation with positive diagonal, so it
    does not depend on the LAPACK / cuSOLVER implementation.
    """
    _check_matrix(A, "qr_signfixed: A")
    xp = get_xp(A)
    Q, R = xp.linalg.qr(A)  # n, k; k, m  (mode="reduced")
    d = (xp.diagonal(R) >= 0).astype(A.dtype) * 2 - 1  # k, entries +-1
    return Q * d[None, :], R * d[:, None]


def orthonormality_error(U) -> float:
    """``‖UᵀU − I‖_F`` as a Python float (0.0 for a basis with no columns).

    Parameters
    ----------
    U : array, shape (n, r)
    """
    _check_matrix(U, "orthonormality_error: U")
    return float(_orthonormality_error_0d(U))


def _orthonormality_error_0d(U):
    """``‖UᵀU − I‖_F`` as a 0-d array on U's backend (no host copy yet). In place and by one
    dot product: five array calls instead of eight (the layers and the step check every
    factor twice per training step; 12.8 against 28.5 µs for a 32 x 16 float32 U)."""
    xp = get_xp(U)
    E = U.T @ U  # r, r
    E -= xp.eye(U.shape[1], dtype=E.dtype)
    return xp.sqrt(xp.vdot(E, E))


def orthonormality_errors(Us) -> list:
    """``[‖U_iᵀU_i − I‖_F for U_i in Us]`` as Python floats, the same numbers as
    :func:`orthonormality_error` of each, with one device-to-host copy on CuPy for all of them
    (each copy waits for the GPU: a step checks its four factors two or three times)."""
    for i, U in enumerate(Us):
        _check_matrix(U, f"orthonormality_errors: U_{i}")
    xp = get_xp(*Us)
    errs = [_orthonormality_error_0d(U).astype(xp.float64) for U in Us]
    if xp is not np and errs:  # one copy for all (NumPy: no copy; stacking would cost 20 µs)
        errs = to_numpy(xp.stack(errs))
    return [float(e) for e in errs]


def max_orthonormality_error(Us) -> float:
    """``max_i ‖U_iᵀU_i − I‖_F`` over a sequence of bases (0.0 for an empty sequence)."""
    return max(orthonormality_errors(list(Us)), default=0.0)


def check_orthonormal(Us, who: str):
    """Raise ValueError unless every U_i has orthonormal columns to the dtype's tolerance.

    The bound is 10 ortho sqrt(n_i) (``refdlrt.tolerances``): ten times the validation bound,
    so bases the library produced always pass, while a basis that is not orthonormal (an
    input from elsewhere; the step's guarantees assume U_i^T U_i = I) is refused.
    """
    Us = list(Us)
    for i, (U, err) in enumerate(zip(Us, orthonormality_errors(Us))):
        bound = 10 * tolerance(U.dtype).ortho * max(U.shape[0], 1) ** 0.5
        if not err <= bound:
            raise ValueError(
                f"{who}: factor {i} ({U.shape[0]} x {U.shape[1]}) is not orthonormal: expected "
                f"||U_{i}^T U_{i} - I||_F <= {bound:.1e} ({U.dtype}), got {err:.3e}"
            )
