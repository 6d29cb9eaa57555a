"""Tests that kill mutmut survivors in refdlrt/tensor (hosvd, tucker, linalg, ranks).

Mutants killed (mutmut 3.8.1 names, ``refdlrt.tensor.<module>.x_<function>__mutmut_<n>``;
see tests/README.md, "Mutation testing"):

* hosvd: _per_mode 6; tail_norms 5, 6, 12; truncation_rank 12, 16, 24; _check_tensor 2, 5, 6,
  7, 9, 10; _check_bounds 20, 24, 25; _check_ranks 4, 8, 9; hosvd 13, 19, 23, 24, 30, 31, 32.
* tucker: mode_product 2-5; tucker_to_tensor 4, 5; Tucker.__post_init__ 17, 22, 23, 30, 43-45.
* linalg: _check_matrix 2, 7, 8, 14, 15; orth 2, 5-7, 19, 23, 33, 35; qr_signfixed 2, 5-7,
  15, 17; orthonormality_error 2, 5-7; check_orthonormal 1-21 (no tensor test reached it).
* ranks: compatible_ranks 1-4, 6-14, 16 and init_ranks 1-14 (no tensor test reached them;
  compatible_ranks 5 and 15 are equivalent, see tests/README.md).

Expectations come from the docstrings (error message formats, the sign rule of qr_signfixed),
brute-force specs written here (compatible ranks), or closed forms (tails of σ = (c, c)).
Only NumPy is used: the survivors that differ only on CuPy are listed in tests/README.md.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from helpers import ForeignArray

from refdlrt.tensor.hosvd import hosvd, tail_norms, truncation_rank
from refdlrt.tensor.linalg import (
    check_orthonormal,
    orth,
    orthonormality_error,
    qr_signfixed,
    svd_thin,
)
from refdlrt.tensor.ranks import compatible_ranks, init_ranks
from refdlrt.tensor.tucker import Tucker, mode_product, tucker_to_tensor
from refdlrt.tolerances import tolerance

TOL = tolerance(np.float64)


def _exact(msg: str) -> str:
    """A regex matching exactly ``msg`` (so a changed prefix, suffix or case is caught)."""
    return "^" + re.escape(msg) + "$"


# ------------------------------------------------------------------------------ tail_norms


def test_tail_norms_empty_sigma_is_a_single_zero():
    # k = 0 singular values: tails has length k + 1 = 1 and tails[k] = 0 (docstring)
    out = tail_norms(np.zeros(0))
    assert out.shape == (1,) and out[0] == 0.0


@pytest.mark.parametrize("c", [1e200, 1e-200, 0.5])
def test_tail_norms_scaled_against_overflow_and_underflow(c):
    # σ = (c, c): tails = (√2 c, c, 0) exactly in real arithmetic; c² overflows (1e200) or
    # underflows (1e-200) in float64, so only the scaled computation gets it right.
    out = tail_norms(np.array([c, c]))
    np.testing.assert_allclose(out, [math.sqrt(2.0) * c, c, 0.0], rtol=TOL.rtol)


# ------------------------------------------------------------------------- truncation_rank


@pytest.mark.parametrize("bad", [[np.inf], [np.nan], [-1.0], [2.0, -1.0]])
def test_truncation_rank_rejects_non_finite_or_negative_single_values(bad):
    msg = "truncation_rank: sigma must be finite, non-negative and descending"
    with pytest.raises(ValueError, match=_exact(msg)):
        truncation_rank(np.array(bad), 0.1)


# ----------------------------------------------------------------------------------- hosvd


def test_hosvd_of_a_vector_is_itself():
    # d = 1 is allowed (ndim >= 1): Mat_0(T) = T as a column, one singular value ‖T‖.
    T = np.array([3.0, 4.0])
    tucker, info = hosvd(T)
    assert info.ranks == (1,)
    np.testing.assert_allclose(tucker.to_tensor(), T, rtol=TOL.rtol)
    assert info.norm == pytest.approx(5.0, rel=TOL.rtol)  # ‖(3, 4)‖ = 5


def test_hosvd_error_messages_name_the_argument():
    T = np.ones((3, 4, 2))
    with pytest.raises(TypeError, match=_exact("hosvd: T: expected dtype float32 or float64, "
                                               "got int64")):
        hosvd(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=_exact("hosvd: give ranks or tau, not both")):
        hosvd(T, ranks=2, tau=0.1)
    with pytest.raises(ValueError, match=_exact(
            "hosvd: r_min / r_max apply to the tau and full-rank rules; with explicit ranks "
            "give neither")):
        hosvd(T, ranks=2, r_max=3)
    with pytest.raises(ValueError, match=_exact(
            "hosvd: r_min: expected an int or 3 ints (one per mode), got (1, 1)")):
        hosvd(T, ranks=2, r_min=(1, 1))
    with pytest.raises(ValueError, match=_exact(
            "hosvd: r_max: expected an int or 3 ints (one per mode), got (1, 2)")):
        hosvd(T, tau=0.1, r_max=(1, 2))
    with pytest.raises(ValueError, match=_exact(
            "hosvd: ranks: expected an int or 3 ints (one per mode), got (1, 2)")):
        hosvd(T, ranks=(1, 2))
    with pytest.raises(TypeError, match=_exact(
            "hosvd: ranks: expected an int or 3 ints (one per mode), got 1.5")):
        hosvd(T, ranks=1.5)


# ---------------------------------------------------------------------------------- tucker


def test_mode_product_rejects_mixed_backends():
    T = np.zeros((2, 3))
    A = ForeignArray(np.zeros((4, 3)))  # looks like a CuPy array
    with pytest.raises(TypeError, match="mix array libraries"):
        mode_product(T, A, 1)


def test_tucker_rejects_a_core_of_another_backend_than_its_factors():
    # core NumPy, every factor "CuPy": only the core's presence in the check can catch it
    F = [ForeignArray(np.zeros((4, 2))), ForeignArray(np.zeros((5, 3)))]
    with pytest.raises(TypeError, match="mix array libraries"):
        Tucker(np.zeros((2, 3)), tuple(F))


def test_tucker_error_messages():
    C = np.zeros((2, 3))
    with pytest.raises(ValueError, match=_exact(
            "tucker_to_tensor: core of shape (2, 3) needs 2 factors, got 1")):
        tucker_to_tensor(C, (np.zeros((4, 2)),))
    with pytest.raises(ValueError, match=_exact("Tucker: expected at least one factor, got 0")):
        Tucker(np.zeros(()), ())
    with pytest.raises(TypeError, match=_exact(
            "Tucker core: expected dtype float32 or float64, got int64")):
        Tucker(np.zeros((2, 3), dtype=np.int64), (np.zeros((4, 2)), np.zeros((5, 3))))
    with pytest.raises(TypeError, match=_exact(
            "Tucker factor 1: expected dtype float32 or float64, got int64")):
        Tucker(C, (np.zeros((4, 2)), np.zeros((5, 3), dtype=np.int64)))


# ---------------------------------------------------------------------------------- linalg


@pytest.mark.parametrize("fn, name", [(orth, "orth: A"), (qr_signfixed, "qr_signfixed: A"),
                                      (orthonormality_error, "orthonormality_error: U")])
def test_matrix_checks_name_the_function_and_layout(fn, name):
    with pytest.raises(ValueError, match=_exact(
            f"{name}: expected a 2-d array (rows, columns), got shape (3,)")):
        fn(np.ones(3))
    with pytest.raises(TypeError, match=_exact(
            f"{name}: expected dtype float32 or float64, got int64")):
        fn(np.ones((3, 2), dtype=np.int64))


def test_orth_default_cutoff_uses_the_float32_epsilon():
    # A rank-1 float32 matrix: its computed σ_2.. are rounding noise ~ eps32 σ_1 (~1e-8 σ_1),
    # far above max(n, m) eps64 σ_1 but below max(n, m) eps32 σ_1, so the default cut-off in
    # the input's own precision gives the true rank 1.
    rng = np.random.default_rng(0)
    A = (rng.standard_normal((5, 1)) @ rng.standard_normal((1, 5))).astype(np.float32)
    s = np.linalg.svd(A, compute_uv=False)
    assert s[1] > 5 * np.finfo(np.float64).eps * s[0]  # the case is the one described
    assert s[1] < 5 * np.finfo(np.float32).eps * s[0]
    Q = orth(A)
    assert Q.shape == (5, 1) and Q.dtype == np.float32


def test_orth_rtol_zero_keeps_every_nonzero_singular_value():
    A = np.diag([1.0, 1e-300, 0.0])  # rtol = 0 is allowed: only exact zeros are cut
    assert orth(A, rtol=0.0).shape == (3, 2)


def test_orth_of_an_empty_matrix_keeps_the_dtype():
    assert orth(np.zeros((4, 0), dtype=np.float32)).dtype == np.float32


def test_qr_signfixed_keeps_float32():
    A = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    Q, R = qr_signfixed(A)
    assert Q.dtype == np.float32 and R.dtype == np.float32


def test_qr_signfixed_takes_the_sign_of_a_zero_diagonal_as_plus():
    # First column zero: R[0, 0] = 0. Docstring: D = diag(sign(R_jj)) with sign 0 taken as +1,
    # result (Q D, D R) from the raw LAPACK QR. Spec applied here to numpy's own QR.
    A = np.array([[0.0, 1.0], [0.0, 2.0], [0.0, -1.0]])
    Q0, R0 = np.linalg.qr(A)
    d = np.where(np.diag(R0) >= 0, 1.0, -1.0)
    assert R0[0, 0] == 0.0  # the case is the one described
    Q, R = qr_signfixed(A)
    np.testing.assert_array_equal(Q, Q0 * d[None, :])
    np.testing.assert_array_equal(R, R0 * d[:, None])


# ---------------------------------------------------------------------- check_orthonormal


def _perturbed_basis(n: int, r: int, err: float):
    """An n x r matrix U with ‖UᵀU − I‖_F = err exactly in real arithmetic: U = Q diag(√(1+e)),
    one column scaled, so UᵀU − I = diag(e, 0, ..)."""
    Q = np.linalg.qr(np.random.default_rng(n).standard_normal((n, r)))[0]
    U = Q.copy()
    U[:, 0] *= math.sqrt(1.0 + err)
    return U


@pytest.mark.parametrize("n, r", [(9, 2), (1, 1), (4, 4)])
def test_check_orthonormal_boundary(n, r):
    # bound = 10 ortho sqrt(max(n, 1)) (docstring); errors of 0.95x and 1.05x the bound (a 5 %
    # margin: the construction's rounding is ~1e-4 relative to err ~ 1e-12)
    bound = 10 * TOL.ortho * math.sqrt(n)
    check_orthonormal([_perturbed_basis(n, r, 0.0), _perturbed_basis(n, r, 0.95 * bound)], "w")
    bad = _perturbed_basis(n, r, 1.05 * bound)
    err = orthonormality_error(bad)
    with pytest.raises(ValueError, match=_exact(
            f"w: factor 1 ({n} x {r}) is not orthonormal: expected ||U_1^T U_1 - I||_F <= "
            f"{bound:.1e} (float64), got {err:.3e}")):
        check_orthonormal([_perturbed_basis(n, r, 0.0), bad], "w")


def test_check_orthonormal_float32_bound_and_equality():
    # float32 uses its own (larger) ortho tolerance: 0.5x its bound passes
    n = 16
    bound32 = 10 * tolerance(np.float32).ortho * math.sqrt(n)
    U = _perturbed_basis(n, 3, 0.5 * bound32).astype(np.float32)
    check_orthonormal([U], "w")
    with pytest.raises(ValueError, match="not orthonormal"):
        check_orthonormal([_perturbed_basis(n, 3, 2 * bound32).astype(np.float32)], "w")


def test_check_orthonormal_accepts_an_error_equal_to_the_bound():
    # "err <= bound" passes at equality. U = [e_0 | x e_0 + e_2] (3 x 2): UᵀU − I has only the
    # off-diagonal x (x² vanishes next to 1 in float64), so err = √2 |x|; step x by ulps until
    # the computed err equals the bound 10 ortho √3 exactly, then nudge it one ulp above.
    n = 3
    bound = 10 * TOL.ortho * math.sqrt(n)

    def basis(x):
        return np.array([[1.0, x], [0.0, 0.0], [0.0, 1.0]])

    x = bound / math.sqrt(2.0)
    for _ in range(64):
        err = orthonormality_error(basis(x))
        if err == bound:
            break
        x = np.nextafter(x, np.inf if err < bound else -np.inf)
    else:  # pragma: no cover - the search is over a few ulps
        pytest.fail("no x with err == bound found")
    check_orthonormal([basis(x)], "w")  # equality passes
    x_up = x
    while orthonormality_error(basis(x_up)) <= bound:
        x_up = np.nextafter(x_up, np.inf)
    with pytest.raises(ValueError, match="not orthonormal"):
        check_orthonormal([basis(x_up)], "w")


# ------------------------------------------------------------------------------------ ranks


def _compatible_spec(ranks):
    """Brute force: the componentwise largest tuple q <= ranks with q_i <= Π_{j≠i} q_j (the
    compatible tuples are closed under componentwise max, so it is unique)."""
    best = None
    for q in itertools.product(*(range(1, r + 1) for r in ranks)):
        if all(q[i] <= math.prod(q[:i] + q[i + 1:]) for i in range(len(q))):
            if best is None or all(a >= b for a, b in zip(q, best)):
                best = q
    return best


@pytest.mark.parametrize("ranks", [(5,), (1, 3), (4, 4), (2, 3, 9), (9, 2, 3), (7, 1, 1, 5),
                                   (3, 4, 5), (1, 1, 1), (6, 2, 2), (12, 2, 3, 1), (9, 3, 1, 1),
                                   (1, 9, 2), (4, 1, 9), (5, 2, 1, 3)])
def test_compatible_ranks_is_the_largest_compatible_tuple(ranks):
    out = compatible_ranks(list(ranks))
    assert isinstance(out, tuple) and out == _compatible_spec(ranks)


@pytest.mark.parametrize("shape, fraction", [((10, 4), 0.5), ((3, 3, 3), 1.0), ((7, 5, 3), 0.2),
                                             ((1, 8, 8), 1.0), ((100, 1), 0.01)])
def test_init_ranks_is_ceil_fraction_then_compatible(shape, fraction):
    raw = tuple(max(1, math.ceil(fraction * n)) for n in shape)
    assert init_ranks(shape, fraction) == _compatible_spec(raw)


def test_init_ranks_at_least_one():
    assert init_ranks((3, 3), 0.01) == (1, 1)  # ceil(0.03) = 1


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, 2.0, 1.0000001])
def test_init_ranks_rejects_fractions_outside_0_1(bad):
    with pytest.raises(ValueError, match=_exact(
            f"init rank fraction: expected 0 < fraction <= 1, got {bad}")):
        init_ranks((4, 4), bad)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (4, 4)])
def test_svd_thin_returns_the_thin_factors(shape):
    A = np.random.default_rng(0).standard_normal(shape)
    P, s, Zt = svd_thin(A)
    k = min(shape)
    assert P.shape == (shape[0], k) and s.shape == (k,) and Zt.shape == (k, shape[1])
    np.testing.assert_allclose((P * s) @ Zt, A, atol=1e-13)  # float64 rounding of a 7 x 3 product


def test_truncation_bounds_cap_adaptive_modes_and_keep_the_others():
    """lo = min(r_min, width), hi = max(min(r_max, width), lo) on adaptive modes (written out
    by hand); a non-adaptive mode keeps its width both ways."""
    from refdlrt.tensor.ranks import truncation_bounds

    lo, hi = truncation_bounds(2, [5, 1, 9, 4], [8, 6, 3, 7], [True, True, True, False])
    assert lo == [2, 2, 2, 7]  # min(2, width) on modes 0-2; mode 3 keeps 7
    assert hi == [5, 2, 3, 7]  # 5; min(1, 6) = 1 raised to lo = 2; min(9, 3) = 3; kept
    assert truncation_bounds(4, [3, 3], [2, 6], [True, True]) == ([2, 4], [2, 4])  # r_min above a width
