"""orth / qr_signfixed / orthonormality_error.

Oracles: planted-rank factorisations (the range is known), least squares for membership in a
range, the Cholesky factor of AᵀA (the unique positive-diagonal R), diagonal scalings whose
orthonormality error is known in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refdlrt.backend import get_xp, to_numpy
from refdlrt.tensor.linalg import (
    left_singular,
    max_orthonormality_error,
    orth,
    orthonormality_error,
    qr_signfixed,
    svd_thin,
)
from refdlrt.tolerances import tolerance

F64 = np.float64
TOL = tolerance(F64)


@st.composite
def planted_rank(draw, max_side=7):
    """(n, m, k, scale, seed): A = scale * B @ D of rank k <= min(n, m), B: n x k, D: k x m."""
    n = draw(st.integers(1, max_side))
    m = draw(st.integers(1, max_side))
    k = draw(st.integers(0, min(n, m)))
    scale = 10.0 ** draw(st.integers(-30, 30))  # the rank cut-off must be relative
    return n, m, k, scale, draw(st.integers(0, 2**32 - 1))


def _ortho_bound(n: int) -> float:
    return TOL.ortho * math.sqrt(max(n, 1))  # the table's unit is per sqrt(n)


# ------------------------------------------------------------------------------------ orth


@given(cfg=planted_rank())
def test_orth_spans_exactly_the_range(xp, cfg):
    n, m, k, scale, seed = cfg
    rng = np.random.default_rng(seed)
    B, D = rng.standard_normal((n, k)), rng.standard_normal((k, m))
    A = scale * (B @ D)  # n, m of rank k (generic Gaussian factors)
    Q = orth(xp.asarray(A))
    assert get_xp(Q) is xp
    assert Q.shape == (n, k)
    assert orthonormality_error(Q) <= _ortho_bound(n)
    Qn = to_numpy(Q)
    # range(A) ⊆ range(Q): the projection residual of A vanishes (relative to ‖A‖)
    assert np.linalg.norm(A - Qn @ (Qn.T @ A)) <= TOL.rtol * np.linalg.norm(A)
    # range(Q) ⊆ range(A) = range(B): each column of Q is a combination of B's columns
    if k > 0:
        X = np.linalg.lstsq(B, Qn, rcond=None)[0]
        assert np.linalg.norm(Qn - B @ X) <= TOL.rtol * math.sqrt(k)


def test_orth_zero_and_empty_matrices(xp):
    assert orth(xp.zeros((4, 3))).shape == (4, 0)
    assert orth(xp.zeros((4, 0))).shape == (4, 0)
    assert orth(xp.zeros((0, 3))).shape == (0, 0)


def test_orth_cutoff_rtol(xp, rng):
    # singular values 1 and 1e-8: kept by the default cut-off (4 * eps), dropped by rtol = 1e-6
    P = np.linalg.qr(rng.standard_normal((4, 2)))[0]
    Z = np.linalg.qr(rng.standard_normal((3, 2)))[0]
    A = xp.asarray(P @ np.diag([1.0, 1e-8]) @ Z.T)
    assert orth(A).shape == (4, 2)
    Q = orth(A, rtol=1e-6)
    assert Q.shape == (4, 1)
    # the kept direction is P[:, 0] up to sign
    assert abs(abs(float(to_numpy(Q)[:, 0] @ P[:, 0])) - 1.0) <= TOL.rtol


def test_orth_errors(xp):
    with pytest.raises(ValueError, match=r"2-d array.*got shape \(3,\)"):
        orth(xp.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        orth(xp.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="NaN or Inf"):
        orth(xp.asarray(np.array([[1.0, np.nan], [0.0, 1.0]])))
    with pytest.raises(ValueError, match="rtol >= 0"):
        orth(xp.eye(2), rtol=-1.0)


# ------------------------------------------------------------------------------ qr_signfixed


@given(cfg=planted_rank())
def test_qr_signfixed_factorises_with_nonnegative_diagonal(xp, cfg):
    n, m, k, scale, seed = cfg
    rng = np.random.default_rng(seed)
    A = scale * (rng.standard_normal((n, k)) @ rng.standard_normal((k, m)))  # any rank/shape
    Q, R = qr_signfixed(xp.asarray(A))
    q = min(n, m)
    assert Q.shape == (n, q) and R.shape == (q, m)
    Qn, Rn = to_numpy(Q), to_numpy(R)
    assert np.all(np.diag(Rn) >= 0)
    np.testing.assert_array_equal(Rn, np.triu(Rn))
    assert orthonormality_error(Q) <= _ortho_bound(n)
    assert np.linalg.norm(Qn @ Rn - A) <= TOL.rtol * np.linalg.norm(A)


@given(n=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_qr_signfixed_is_the_unique_positive_factorisation(xp, n, seed):
    m = n // 2  # tall, full column rank, well conditioned with high probability
    A = np.random.default_rng(seed).standard_normal((n, max(m, 1)))
    _, R = qr_signfixed(xp.asarray(A))
    R_chol = np.linalg.cholesky(A.T @ A).T  # the unique upper R with positive diagonal
    # forming AᵀA squares the condition number, so the Cholesky oracle is accurate to ~u κ(A)²
    kappa2 = np.linalg.cond(A) ** 2
    assert np.linalg.norm(to_numpy(R) - R_chol) <= TOL.rtol * kappa2 * np.linalg.norm(R_chol)


def test_qr_signfixed_flips_negative_diagonals(xp):
    # Householder QR of -I has R = I or -I depending on the library; the fixed one is I.
    A = xp.asarray(-np.eye(3))
    Q, R = qr_signfixed(A)
    np.testing.assert_allclose(to_numpy(R), np.eye(3), atol=TOL.atol)
    np.testing.assert_allclose(to_numpy(Q), -np.eye(3), atol=TOL.atol)


# ----------------------------------------------------------------------- orthonormality_error


@given(n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_orthonormality_error_closed_form(xp, n, seed, data):
    r = data.draw(st.integers(1, n), label="r")
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, r)))[0]
    s = rng.uniform(0.5, 2.0, size=r)
    # UᵀU - I = diag(s² - 1) for U = Q diag(s)
    expected = math.sqrt(float(np.sum((s * s - 1.0) ** 2)))
    got = orthonormality_error(xp.asarray(Q * s))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=TOL.rtol, abs=TOL.atol)
    assert orthonormality_error(xp.asarray(Q)) <= _ortho_bound(n)


def test_max_orthonormality_error(xp):
    Us = [xp.eye(3)[:, :2], 2.0 * xp.eye(2), xp.zeros((4, 0))]
    got = max_orthonormality_error(Us)
    assert isinstance(got, float)
    assert got == pytest.approx(math.sqrt(2 * 3.0**2), rel=TOL.rtol)  # diag(4 - 1, 4 - 1)
    assert max_orthonormality_error([]) == 0.0
    assert orthonormality_error(xp.zeros((4, 0))) == 0.0


def test_orthonormality_errors_are_each_factors_error_from_one_copy(xp, rng, monkeypatch):
    """The batched errors are :func:`orthonormality_error`'s numbers, float32 and float64 mixed,
    taken from the device in one copy on CuPy (a GPU waits at each), none on NumPy."""
    import refdlrt.tensor.linalg as linalg_module

    Q, _ = np.linalg.qr(rng.standard_normal((7, 3)))
    Us = [xp.asarray(Q), xp.asarray(Q.astype(np.float32)), xp.asarray(1.5 * Q[:, :2]),
          xp.zeros((4, 0))]
    copies, real = [], linalg_module.to_numpy
    monkeypatch.setattr(linalg_module, "to_numpy", lambda a: copies.append(a) or real(a))
    got = linalg_module.orthonormality_errors(Us)
    assert len(copies) == (0 if xp is np else 1)
    assert got == [orthonormality_error(U) for U in Us] and all(type(e) is float for e in got)
    assert got[2] == pytest.approx(math.sqrt(2) * 1.25, rel=TOL.rtol)  # diag(2.25 - 1)
    assert linalg_module.orthonormality_errors([]) == []
    with pytest.raises(ValueError, match="U_1"):
        linalg_module.orthonormality_errors([xp.asarray(Q), xp.zeros(3)])


def test_svds_run_on_one_blas_thread(monkeypatch):
    """svd_thin runs inside one_blas_thread: one BLAS thread for NumPy, whatever the caller's
    setting; nothing for other backends (a small CuPy matrix's SVD runs on the host, inside
    one_blas_thread(np), tested in test_gpu.py). The QRs and the Gram matrices' eigh do not (entering
    costs more than a second thread does for them: paired training steps, benchmarks/README)."""
    import types

    import threadpoolctl

    import refdlrt.tensor.linalg as linalg_module
    from refdlrt.backend import one_blas_thread

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with one_blas_thread(np):
            inside = {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}
        assert inside == {1}
    fake_cupy = types.SimpleNamespace(__name__="cupy")
    assert type(one_blas_thread(fake_cupy)).__name__ == "nullcontext"

    entered = []
    real = linalg_module.one_blas_thread

    def spy(xp):
        entered.append(xp.__name__)
        return real(xp)

    monkeypatch.setattr(linalg_module, "one_blas_thread", spy)
    A = np.random.default_rng(0).standard_normal((6, 4))
    linalg_module.svd_thin(A)
    assert entered == ["numpy"]
    linalg_module.qr_signfixed(A)
    linalg_module.left_singular(A.T.astype(np.float32))  # wide float32: eigh of the Gram matrix
    assert entered == ["numpy"]


@given(m=st.integers(1, 12), extra=st.integers(0, 40), rank=st.integers(0, 12), seed=st.integers(0, 2**32 - 1))
def test_left_singular_float32_by_the_gram_matrix_matches_the_float64_svd(xp, m, extra, rank, seed):
    """A wide float32 A (m <= n) goes through its float64 Gram matrix: s and the leading
    singular subspaces agree with the float64 SVD of the same numbers to float32 accuracy, and
    P is orthonormal, rank-deficient A included (rank < m)."""
    n = m + extra
    rng = np.random.default_rng(seed)
    k = min(rank, m)
    A = (rng.standard_normal((m, k)) @ rng.standard_normal((k, n))).astype(np.float32)
    P, s = left_singular(xp.asarray(A))
    assert P.dtype == s.dtype == np.float32 and P.shape == (m, m) and s.shape == (m,)
    P, s = to_numpy(P).astype(np.float64), to_numpy(s).astype(np.float64)
    P64, s64, _ = np.linalg.svd(A.astype(np.float64), full_matrices=False)
    scale = max(s64[0], 1e-30)
    tol = tolerance(np.float32)
    assert np.all(np.diff(s) <= 0)
    # singular values: the Gram route's error is about sqrt(eps64) s_1 = 1.5e-8 s_1, plus the
    # float32 rounding of s (eps32 s_j): 4 eps32 s_1 bounds both
    close = 4 * float(np.finfo(np.float32).eps) * scale
    np.testing.assert_allclose(s, s64, rtol=0, atol=close)
    assert orthonormality_error(P) <= tol.ortho * math.sqrt(m)
    # the subspace of the singular values above 1e-3 s_1 that are separated from the rest
    j = int((s64 > 1e-3 * scale).sum())
    if 0 < j < m and s64[j - 1] - s64[j] > 1e-2 * scale:
        proj = P[:, :j] @ P[:, :j].T - P64[:, :j] @ P64[:, :j].T
        assert np.linalg.norm(proj) <= 1e-4  # float32: gap 1e-2 s_1, error ~1e-7 / 1e-2 per unit
    # each P_j is a left singular vector of its s_j: ||P_j^T A|| = s_j
    np.testing.assert_allclose(np.linalg.norm(P.T @ A.astype(np.float64), axis=1), s, rtol=0,
                               atol=close)


def test_left_singular_routes(xp, monkeypatch):
    """float64 and tall float32 matrices take LAPACK's SVD unchanged (bit for bit the factors of
    svd_thin); a wide or square float32 one never calls the SVD."""
    import refdlrt.tensor.linalg as linalg_module

    rng = np.random.default_rng(1)
    for shape, dtype in [((5, 9), np.float64), ((9, 9), np.float64), ((9, 5), np.float32)]:
        A = xp.asarray(rng.standard_normal(shape).astype(dtype))
        P, s = left_singular(A)
        P0, s0, _ = svd_thin(A)
        assert to_numpy(P).tobytes() == to_numpy(P0).tobytes()
        assert to_numpy(s).tobytes() == to_numpy(s0).tobytes()

    def no_svd(A):
        raise AssertionError("the SVD was called")

    monkeypatch.setattr(linalg_module, "svd_thin", no_svd)
    for shape in [(5, 9), (9, 9), (1, 12)]:  # orth's default rtol max(n, m) eps32 >= 1e-6
        left_singular(xp.asarray(rng.standard_normal(shape).astype(np.float32)))
        orth(xp.asarray(rng.standard_normal(shape).astype(np.float32)))
    orth(xp.asarray(rng.standard_normal((3, 4)).astype(np.float32)), rtol=1e-6)  # at the floor


@given(n=st.integers(2, 60), m=st.integers(1, 30), decades=st.integers(0, 6),
       rank=st.integers(0, 30), seed=st.integers(0, 2**32 - 1))
def test_orth_of_a_tall_float32_matrix_by_its_gram_matrix(xp, n, m, decades, rank, seed):
    """A tall float32 A goes through AᵀA in float64 (re-orthonormalised when ill-conditioned):
    the same numerical rank and span as the float64 SVD of the same numbers, orthonormal
    columns. Singular values are spread over ``decades`` decades (κ up to 1e6, where the second
    pass is needed), some exactly zero (rank < m). rtol is at least the Gram route's 1e-6, so
    small matrices take that route too (their default rtol, max(n, m) eps32 < 1e-6 for n < 9,
    takes the float32 SVD, whose span is only good to eps32 σ_1 / σ_k: cuSOLVER's was off by
    7e-4 at σ_1 / σ_k = 1e4 on an H200, LAPACK's happened to be closer)."""
    m = min(m, n - 1)
    rng = np.random.default_rng(seed)
    k = min(rank, m)
    Pl, _ = np.linalg.qr(rng.standard_normal((n, m)))
    Zr, _ = np.linalg.qr(rng.standard_normal((m, m)))
    sig = np.zeros(m)
    sig[:k] = np.logspace(0, -decades, k) * 10.0 ** rng.uniform(-3, 3) if k else sig[:k]
    A = ((Pl * sig) @ Zr.T).astype(np.float32)
    rtol = max(max(n, m) * float(np.finfo(np.float32).eps), 1e-6)  # the Gram route's range
    Q = to_numpy(orth(xp.asarray(A), rtol=rtol)).astype(np.float64)
    P64, s64, _ = np.linalg.svd(A.astype(np.float64), full_matrices=False)
    kept = s64 > rtol * s64[0] if s64[0] > 0 else np.zeros(m, bool)
    margin = np.abs(s64 / max(s64[0], 1e-300) - rtol) > 0.1 * rtol  # no σ near the cut
    if margin.all():
        assert Q.shape == (n, int(kept.sum()))
        Pk = P64[:, kept]
        # same span. Both come from the same float32 numbers; the Gram route's subspace error is
        # about eps64 σ_1² / (σ_k² - σ_{k+1}²) <= 1e-4 (kept σ >= 1e-6 σ_1, dropped ones are
        # rounding noise), plus the float32 rounding of Q (a float32 SVD would be off by
        # eps32 σ_1 / σ_k, up to 0.1 here).
        np.testing.assert_allclose(Q @ Q.T, Pk @ Pk.T, rtol=0, atol=1e-4)
    tol = tolerance(np.float32)
    assert orthonormality_error(Q) <= tol.ortho * math.sqrt(max(Q.shape[1], 1))


def test_orth_tall_gram_route_reorthonormalises_only_ill_conditioned_matrices(monkeypatch):
    """One eigen-decomposition (of AᵀA) when eps64 κ² stays below 2^-27 (κ = σ_1 / σ_k, σ_k the
    smallest kept σ; κ <= 5793); a second one (of QᵀQ) above it (10, 1e3 and 3e3 against 1e4
    and 1e5, with only the last σ small or only the first one large). rtol = 1e-6 still takes the
    Gram route; a smaller rtol, a float64 or a square matrix do not."""
    import refdlrt.tensor.linalg as linalg_module

    calls, real = [], linalg_module._descending_eigh
    monkeypatch.setattr(linalg_module, "_descending_eigh", lambda M: calls.append(M.shape) or real(M))
    rng = np.random.default_rng(5)
    P, _ = np.linalg.qr(rng.standard_normal((40, 6)))
    for sigma, expected in [([1.0] * 5 + [1e-1], [(6, 6)]), ([1.0] * 5 + [1e-3], [(6, 6)]),
                            ([1.0] * 5 + [1 / 3e3], [(6, 6)]),  # eps64 κ² = 2.0e-9 < 2^-27
                            ([1.0] * 5 + [1e-4], [(6, 6), (6, 6)]),  # 2.2e-8 > 2^-27
                            ([1.0] + [1e-5] * 5, [(6, 6), (6, 6)]),  # only σ_1 is large
                            ([1.0] * 5 + [1e-5], [(6, 6), (6, 6)])]:
        calls.clear()
        A = (P * np.array(sigma)).astype(np.float32)
        Q = orth(A)
        assert calls == expected and Q.shape == (40, 6)
        assert orthonormality_error(Q.astype(np.float64)) <= tolerance(np.float32).ortho
    calls.clear()
    orth(A, rtol=1e-6)
    assert calls == [(6, 6), (6, 6)]
    calls.clear()
    orth(A, rtol=1e-7)  # below the Gram route's floor
    orth(A.astype(np.float64))
    assert calls == []
    monkeypatch.setattr(linalg_module, "_orth_tall_by_gram", None)  # a call would fail
    orth(rng.standard_normal((20, 20)).astype(np.float32))  # square (rtol 2.4e-6): not tall
    assert calls == [(20, 20)]  # left_singular's Gram route


def test_orth_tall_gram_route_without_second_pass_is_as_orthonormal_as_float32_allows(monkeypatch):
    """Below the second pass's threshold the error left is at the scale of the float32 cast's own.
    On mixed columns (A = P Σ Vᵀ, so AᵀA is not diagonal) at κ just under the threshold (5000 at
    n = 40, plain and clustered σ; clustered σ at n = 1448; n = 1449 with σ_k just above the
    default cut, where there is never a second pass), Q without the pass is within 8x of Q with
    the pass forced (a review's worst over 560 adversarial matrices was 7x; these reach 3x).
    Above it (κ = 1.5e5, clustered) the pass is taken and keeps Q there: without it the error
    would be 6.9e-6, 130x."""
    import refdlrt.tensor.linalg as linalg_module

    calls, real = [], linalg_module._descending_eigh
    monkeypatch.setattr(linalg_module, "_descending_eigh", lambda M: calls.append(M.shape) or real(M))
    threshold = linalg_module._REORTH_ERROR
    rng = np.random.default_rng(11)
    eps32 = float(np.finfo(np.float32).eps)
    cut = [1.05 * 1449 * eps32, 1.02 * 1448 * eps32]  # σ_k just above the default rtol = n eps32
    cases = [(40, [1.0, 0.7, 0.5, 0.3, 0.1, 1 / 5000], 1),
             (40, [1.0] * 3 + [1 / 5000] * 3, 1),
             (1449, [1.0, 0.7, 0.5, 0.3, 0.1, cut[0]], 1),
             (1448, [1.0] * 3 + [cut[1]] * 3, 1),
             (40, [1.0] * 3 + [1 / 1.5e5] * 3, 2)]
    for n, sigma, eighs in cases:
        P, _ = np.linalg.qr(rng.standard_normal((n, 6)))
        V, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        A = ((P * np.array(sigma)) @ V.T).astype(np.float32)
        calls.clear()
        Q = orth(A)
        assert Q.shape == (n, 6) and len(calls) == eighs, (n, sigma[-1], calls)
        monkeypatch.setattr(linalg_module, "_REORTH_ERROR", 0.0)  # force the pass
        Q_forced = orth(A)
        monkeypatch.setattr(linalg_module, "_REORTH_ERROR", threshold)
        err, err_forced = (orthonormality_error(q.astype(np.float64)) for q in (Q, Q_forced))
        assert err <= 8 * err_forced, (n, sigma[-1], err, err_forced)
        assert err <= tolerance(np.float32).ortho * math.sqrt(6)
        np.testing.assert_allclose(Q @ Q.T, Q_forced @ Q_forced.T, rtol=0, atol=1e-5)  # the same span


def test_orth_tall_gram_route_never_takes_the_second_pass_from_1449_rows():
    """The docstring's claim against the constant: with the default rtol = n eps32 every kept σ_k
    exceeds rtol σ_1, so eps64 (σ_1 / σ_k)² < eps64 / rtol², which is at most _REORTH_ERROR
    exactly from n = 1449 rows on."""
    from refdlrt.tensor.linalg import _REORTH_ERROR

    eps32, eps64 = float(np.finfo(np.float32).eps), float(np.finfo(np.float64).eps)
    for n in (40, 1448, 1449, 3136):
        assert (eps64 / (n * eps32) ** 2 <= _REORTH_ERROR) == (n >= 1449)


def test_reorthonormalise_makes_nearly_orthonormal_columns_orthonormal():
    from refdlrt.tensor.linalg import _reorthonormalise

    rng = np.random.default_rng(2)
    P, _ = np.linalg.qr(rng.standard_normal((30, 5)))
    Q = (P + 1e-3 * rng.standard_normal((30, 5))) * np.array([1.01, 0.99, 1.0, 1.02, 0.98])
    R = _reorthonormalise(Q)
    assert orthonormality_error(R) <= 1e-13  # float64, 5 columns: rounding only
    np.testing.assert_allclose(R @ (R.T @ Q), Q, atol=1e-13)  # the same span as Q


def test_orth_below_the_gram_floor_keeps_exact_rank(xp):
    """A wide float32 matrix of exact rank 3 (a repeated row) with rtol below the Gram route's σ
    floor: LAPACK's float32 SVD decides (on CuPy too: a matrix this small is decomposed on the
    host, ``_HOST_SVD_MAX``), so no column outside range(A) comes back (a review finding: the
    Gram route returned a 4th column in the null space). LAPACK gives σ_4 = 8e-16 for the
    repeated row, below the cut at rtol = 1e-9. (cuSOLVER's float32 SVD leaves σ_4 at rounding
    level, up to eps32 σ_1, above that cut: it returned 4 columns on an H200 before small SVDs
    went to the host.)"""
    from refdlrt.tensor.linalg import _HOST_SVD_MAX

    rng = np.random.default_rng(4)
    A = rng.standard_normal((4, 8)).astype(np.float32)
    A[3] = A[1]
    assert A.size <= _HOST_SVD_MAX
    P64, s64, _ = np.linalg.svd(A.astype(np.float64))
    for rtol in (1e-9, 0.0):
        Q = to_numpy(orth(xp.asarray(A), rtol=rtol)).astype(np.float64)
        assert Q.shape == (4, int((s64 > rtol * s64[0]).sum()))  # 3 at rtol = 1e-9
        if Q.shape[1] == 3:
            assert abs(P64[:, 3] @ Q).max() <= 1e-6  # no column along the left null vector
