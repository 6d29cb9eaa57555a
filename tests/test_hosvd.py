"""Truncated HOSVD and the TDLRT truncation-rank rule.

Oracles: singular values of the unfoldings from np.linalg.svd on an unfolding written in the
test, tensors with a planted Tucker rank, the Eckart–Young bounds of the HOSVD, and a few HOOI
sweeps (written here) as a better approximation for the √d quasi-optimality bound.
"""

from __future__ import annotations

import math
import string

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from refdlrt.backend import get_xp, to_numpy
from refdlrt.tensor.hosvd import HOSVDInfo, hosvd, tail_norms, truncation_rank
from refdlrt.tensor.linalg import orthonormality_error
from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import assert_close, tolerance

F64 = np.float64
TOL = tolerance(F64)


# ------------------------------------------------------------------------------- test oracles


def mat(T, i):
    """Mode-i unfolding written from the definition (C order)."""
    return np.moveaxis(T, i, 0).reshape(T.shape[i], -1)


def sigmas(T):
    """Singular values of every unfolding, computed here with NumPy."""
    return [np.linalg.svd(mat(T, i), compute_uv=False) for i in range(T.ndim)]


def tail(s, r):
    """(Σ_{j>r} σ_j²)^{1/2}, 1-based j."""
    return math.sqrt(float(np.sum(s[r:] ** 2)))


def n_vectors(shape, i):
    """k_i = min(n_i, Π_{j≠i} n_j): the number of singular vectors of Mat_i."""
    return min(shape[i], math.prod(shape) // shape[i])


def reconstruct(core, factors):
    d = core.ndim
    small, big = string.ascii_lowercase[:d], string.ascii_uppercase[:d]
    spec = small + "," + ",".join(big[i] + small[i] for i in range(d)) + "->" + big
    return np.einsum(spec, core, *factors)


def project(T, Us):
    """T ×_i U_iᵀ in every mode, by einsum."""
    d = T.ndim
    small, big = string.ascii_lowercase[:d], string.ascii_uppercase[:d]
    spec = big + "," + ",".join(big[i] + small[i] for i in range(d)) + "->" + small
    return np.einsum(spec, T, *Us)


def hooi(T, ranks, sweeps=5):
    """Higher-order orthogonal iteration from the test's own HOSVD; returns the error."""
    d = T.ndim
    Us = [np.linalg.svd(mat(T, i), full_matrices=False)[0][:, :r] for i, r in enumerate(ranks)]
    for _ in range(sweeps):
        for i in range(d):
            others = [U if j != i else np.eye(T.shape[i]) for j, U in enumerate(Us)]
            Y = project(T, others)  # T ×_{j≠i} U_jᵀ, mode i kept
            Us[i] = np.linalg.svd(mat(Y, i), full_matrices=False)[0][:, : ranks[i]]
    return float(np.linalg.norm(T - reconstruct(project(T, Us), Us)))


@st.composite
def tensor_config(draw, min_ndim=2, max_ndim=4, max_side=5):
    d = draw(st.integers(min_ndim, max_ndim))
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=d, max_size=d)))
    return shape, draw(st.integers(0, 2**32 - 1))


# ------------------------------------------------------------------------------------ full rank


@given(cfg=tensor_config())
def test_full_rank_hosvd_reproduces_tensor(xp, cfg):
    shape, seed = cfg
    T = np.random.default_rng(seed).standard_normal(shape)
    tucker, info = hosvd(xp.asarray(T))
    assert isinstance(tucker, Tucker) and isinstance(info, HOSVDInfo)
    expected_ranks = tuple(n_vectors(shape, i) for i in range(len(shape)))
    assert tucker.ranks == info.ranks == expected_ranks
    assert tucker.shape == shape
    for i, U in enumerate(tucker.factors):
        assert get_xp(U) is xp
        assert orthonormality_error(U) <= TOL.ortho * math.sqrt(shape[i])
    norm = np.linalg.norm(T)
    assert_close(tucker.to_tensor(), T, F64, scale=norm)
    assert info.theta is None
    assert info.norm == pytest.approx(norm, rel=TOL.rtol)
    assert info.bound <= TOL.rtol * norm  # only (numerically) zero values beyond k_i


@given(cfg=tensor_config(), data=st.data())
def test_info_singular_values_tails_and_bound(xp, cfg, data):
    shape, seed = cfg
    ranks = tuple(data.draw(st.integers(1, n), label=f"r{i}") for i, n in enumerate(shape))
    T = np.random.default_rng(seed).standard_normal(shape)
    _, info = hosvd(xp.asarray(T), ranks=ranks)
    ref = sigmas(T)
    norm = np.linalg.norm(T)
    for i, s in enumerate(info.singular_values):
        assert get_xp(s) is xp
        assert_close(s, ref[i], F64, scale=norm)
        r = min(ranks[i], n_vectors(shape, i))
        assert info.ranks[i] == r
        assert info.tails[i] == pytest.approx(tail(ref[i], r), rel=TOL.rtol, abs=TOL.rtol * norm)
    bound = math.sqrt(sum(t * t for t in info.tails))
    assert info.bound == pytest.approx(bound, rel=TOL.rtol)


# --------------------------------------------------------------------------- error bounds


@given(cfg=tensor_config(), data=st.data())
def test_truncation_error_between_eckart_young_bounds(xp, cfg, data):
    shape, seed = cfg
    ranks = tuple(data.draw(st.integers(1, n), label=f"r{i}") for i, n in enumerate(shape))
    T = np.random.default_rng(seed).standard_normal(shape)
    tucker, _ = hosvd(xp.asarray(T), ranks=ranks)
    err = np.linalg.norm(T - to_numpy(tucker.to_tensor()))
    ref = sigmas(T)
    tails = [tail(s, min(r, len(s))) for s, r in zip(ref, ranks)]
    slack = TOL.rtol * np.linalg.norm(T)  # rounding in the SVDs and products
    # ‖T − T_r‖² ≤ Σ_i Σ_{j>r_i} σ_{i,j}²  (De Lathauwer et al. 2000, property 10)
    assert err <= math.sqrt(sum(t * t for t in tails)) + slack
    # Mat_i(T_r) has rank ≤ r_i, so by Eckart–Young ‖T − T_r‖ ≥ tail_i for every i
    assert err >= max(tails) - slack


@given(cfg=tensor_config(max_side=4), data=st.data())
def test_hosvd_quasi_optimal_against_hooi(xp, cfg, data):
    shape, seed = cfg
    ranks = tuple(data.draw(st.integers(1, n), label=f"r{i}") for i, n in enumerate(shape))
    T = np.random.default_rng(seed).standard_normal(shape)
    tucker, _ = hosvd(xp.asarray(T), ranks=ranks)
    err = np.linalg.norm(T - to_numpy(tucker.to_tensor()))
    err_hooi = hooi(T, [min(r, n_vectors(shape, i)) for i, r in enumerate(ranks)])
    slack = TOL.rtol * np.linalg.norm(T)  # rounding
    assert err_hooi <= err + slack  # HOOI from the HOSVD start does not get worse
    assert err <= math.sqrt(len(shape)) * err_hooi + slack


# ------------------------------------------------------------------------- planted rank


def planted_ranks(shape, ranks):
    """Lower ranks until r_i ≤ Π_{j≠i} r_j for all i (a random core then has mode ranks r_i)."""
    ranks = list(ranks)
    changed = True
    while changed:
        changed = False
        for i, r in enumerate(ranks):
            cap = math.prod(ranks) // r
            if r > cap:
                ranks[i], changed = cap, True
    return tuple(ranks)


@given(cfg=tensor_config(), data=st.data())
def test_planted_tucker_rank_is_recovered(xp, cfg, data):
    shape, seed = cfg
    drawn = tuple(data.draw(st.integers(1, n), label=f"r{i}") for i, n in enumerate(shape))
    ranks = planted_ranks(shape, drawn)
    rng = np.random.default_rng(seed)
    C = rng.standard_normal(ranks)
    Us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
    T = reconstruct(C, Us)
    # tau = 1e-10: far above rounding (~1e-16) and far below the planted singular values,
    # which are those of the core unfoldings; make sure they are not accidentally tiny
    sc = sigmas(C)
    assume(min(s[r - 1] for s, r in zip(sc, ranks)) > 1e-6 * np.linalg.norm(C))
    tucker, info = hosvd(xp.asarray(T), tau=1e-10)
    assert info.ranks == tucker.ranks == ranks
    assert_close(tucker.to_tensor(), T, F64, scale=np.linalg.norm(T))


# --------------------------------------------------------------------------- the tau rule


@given(
    cfg=tensor_config(),
    tau=st.floats(0.0, 1.0),
    per_mode=st.booleans(),
    data=st.data(),
)
def test_tau_rule_picks_smallest_admissible_rank(xp, cfg, tau, per_mode, data):
    shape, seed = cfg
    d = len(shape)
    if per_mode:
        r_min = tuple(data.draw(st.integers(1, 3), label=f"rmin{i}") for i in range(d))
    else:
        r_min = (data.draw(st.integers(1, 3), label="rmin"),) * d
    r_max = tuple(data.draw(st.integers(r_min[i], 6), label=f"rmax{i}") for i in range(d))
    T = np.random.default_rng(seed).standard_normal(shape)
    tucker, info = hosvd(xp.asarray(T), tau=tau, r_min=r_min if per_mode else r_min[0],
                         r_max=r_max)
    theta = tau * np.linalg.norm(T)
    assert info.theta == pytest.approx(theta, rel=TOL.rtol)
    assert tucker.ranks == info.ranks
    for i, s in enumerate(sigmas(T)):
        r = info.ranks[i]
        hi = min(r_max[i], shape[i], len(s))  # r_max capped at n_i and at k_i
        lo = min(r_min[i], hi)
        assert lo <= r <= hi
        if r > lo:  # not clamped from below: r - 1 would violate the rule
            assert tail(s, r - 1) > theta
        if r < hi:  # not clamped from above: r itself satisfies the rule
            assert tail(s, r) <= theta
    err = np.linalg.norm(T - to_numpy(tucker.to_tensor()))
    assert err <= info.bound + TOL.rtol * np.linalg.norm(T)  # rounding


def test_truncation_rank_hand_examples():
    s = np.array([3.0, 2.0, 1.0])  # tails: r=0: √14, r=1: √5, r=2: 1, r=3: 0
    assert truncation_rank(s, 0.0) == 3
    assert truncation_rank(s, 0.999) == 3
    assert truncation_rank(s, 1.0) == 2
    assert truncation_rank(s, math.sqrt(5.0)) == 1
    assert truncation_rank(s, 100.0) == 1  # r_ϑ = 0, raised to r_min = 1
    assert truncation_rank(s, 100.0, r_min=2) == 2
    assert truncation_rank(s, 0.0, r_max=2) == 2
    assert truncation_rank(s, 100.0, r_min=5, r_max=7) == 3  # never more than len(sigma)
    assert truncation_rank(np.array([3.0, 2.0, 0.0]), 0.0) == 2  # exact zeros are dropped
    assert truncation_rank(np.zeros(4), 0.0) == 1
    np.testing.assert_allclose(tail_norms(s), np.sqrt([14.0, 5.0, 1.0, 0.0]), rtol=TOL.rtol)


def test_truncation_rank_errors():
    s = np.array([2.0, 1.0])
    with pytest.raises(ValueError, match="theta >= 0"):
        truncation_rank(s, -1.0)
    with pytest.raises(ValueError, match="theta >= 0"):
        truncation_rank(s, float("nan"))
    with pytest.raises(ValueError, match="r_min >= 1"):
        truncation_rank(s, 0.1, r_min=0)
    with pytest.raises(ValueError, match="r_max >= r_min"):
        truncation_rank(s, 0.1, r_min=2, r_max=1)
    with pytest.raises(ValueError, match="descending"):
        truncation_rank(np.array([1.0, 2.0]), 0.1)
    with pytest.raises(ValueError, match="non-empty 1-d"):
        truncation_rank(np.zeros(0), 0.1)


def test_tau_edge_cases(xp, rng):
    shape = (4, 3, 5)
    T = rng.standard_normal(shape)
    full = tuple(n_vectors(shape, i) for i in range(3))
    _, info = hosvd(xp.asarray(T), tau=0.0)
    assert info.ranks == full  # a random tensor has no exact zeros
    _, info = hosvd(xp.asarray(T), tau=1.0)
    assert info.ranks == (1, 1, 1)
    _, info = hosvd(xp.asarray(T), tau=7.0, r_min=2)
    assert info.ranks == (2, 2, 2)
    _, info = hosvd(xp.asarray(T), tau=0.0, r_max=(2, 1, 3))
    assert info.ranks == (2, 1, 3)
    _, info = hosvd(xp.asarray(T), r_max=2)  # full rank capped by r_max
    assert info.ranks == (2, 2, 2)
    _, info = hosvd(xp.asarray(T), tau=1.0, r_min=4)  # r_min capped at n_1 = 3
    assert info.ranks == (4, 3, 4)
    _, info = hosvd(xp.asarray(T), tau=1.0, r_min=(1, 2, 3), r_max=(1, 2, 4))  # per mode
    assert info.ranks == (1, 2, 3)


def test_zero_tensor(xp):
    tucker, info = hosvd(xp.zeros((3, 2, 4)), tau=0.0)  # all σ are exact zeros
    assert info.ranks == (1, 1, 1) and info.norm == 0.0 and info.bound == 0.0
    assert float(xp.abs(tucker.to_tensor()).max()) == 0.0
    _, info = hosvd(xp.zeros((3, 2, 4)), tau=0.5, r_min=2)
    assert info.ranks == (2, 2, 2)


def test_tall_mode_ranks_capped_at_number_of_singular_vectors(xp, rng):
    T = rng.standard_normal((7, 2, 3))  # mode 0: n_0 = 7 > 2 * 3
    tucker, info = hosvd(xp.asarray(T), ranks=(7, 2, 3))
    assert info.ranks == (6, 2, 3) and len(info.singular_values[0]) == 6
    assert_close(tucker.to_tensor(), T, F64, scale=np.linalg.norm(T))


def test_hosvd_keeps_float32(xp, rng):
    T = rng.standard_normal((4, 3, 2)).astype(np.float32)
    tucker, info = hosvd(xp.asarray(T))
    assert tucker.dtype == np.float32 and info.singular_values[0].dtype == np.float32
    assert_close(tucker.to_tensor(), T, np.float32, scale=float(np.linalg.norm(T)))


# ----------------------------------------------------------------------------- bad inputs


def test_hosvd_input_errors(xp):
    T = xp.ones((3, 4, 2))
    with pytest.raises(ValueError, match="ranks or tau, not both"):
        hosvd(T, ranks=2, tau=0.1)
    with pytest.raises(ValueError, match=r"mode 1: rank 5 out of range.*n_1 = 4"):
        hosvd(T, ranks=(1, 5, 1))
    with pytest.raises(ValueError, match=r"mode 0: rank 0 out of range"):
        hosvd(T, ranks=0)
    with pytest.raises(ValueError, match=r"3 ints \(one per mode\)"):
        hosvd(T, ranks=(1, 2))
    with pytest.raises(ValueError, match="with explicit ranks give neither"):
        hosvd(T, ranks=2, r_max=3)
    with pytest.raises(ValueError, match="finite tau >= 0, got -0.1"):
        hosvd(T, tau=-0.1)
    with pytest.raises(ValueError, match="finite tau >= 0, got nan"):
        hosvd(T, tau=float("nan"))
    with pytest.raises(ValueError, match="finite tau >= 0, got inf"):
        hosvd(T, tau=float("inf"))
    with pytest.raises(TypeError, match="real number tau"):
        hosvd(T, tau="0.1")
    with pytest.raises(ValueError, match="r_min >= 1, got 0"):
        hosvd(T, tau=0.1, r_min=0)
    with pytest.raises(ValueError, match=r"mode 2: r_max = 1 is smaller than r_min = 2"):
        hosvd(T, tau=0.1, r_min=2, r_max=(3, 3, 1))
    with pytest.raises(ValueError, match=r"mode 1: r_max = 2 is smaller than r_min = 3"):
        hosvd(T, tau=0.1, r_min=(1, 3, 1), r_max=2)
    with pytest.raises(ValueError, match=r"mode 2: expected r_min >= 1, got 0"):
        hosvd(T, tau=0.1, r_min=(1, 1, 0))
    with pytest.raises(ValueError, match=r"r_min: expected an int or 3 ints"):
        hosvd(T, tau=0.1, r_min=(1, 1))
    with pytest.raises(ValueError, match="with explicit ranks give neither"):
        hosvd(T, ranks=2, r_min=(1, 2, 1))
    bad = np.ones((3, 4, 2))
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        hosvd(xp.asarray(bad))
    bad[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        hosvd(xp.asarray(bad), tau=0.1)
    with pytest.raises(TypeError, match="float32 or float64"):
        hosvd(xp.ones((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"no empty mode, got shape \(3, 0\)"):
        hosvd(xp.ones((3, 0)))
