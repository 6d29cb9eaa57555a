"""The validation suite (issue 6): the discrete approximation bound, the quick run of every
claim, and the tester tested with integrators that have planted bugs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tucker_configs

import refdlrt.dlrt.integrator as integrator
from refdlrt.backend import get_xp, gpu_available, to_numpy
from refdlrt.dlrt.problems import random_quadratic, random_tucker
from refdlrt.tensor.hosvd import HOSVDInfo, tail_norms, truncation_rank
from refdlrt.tensor.linalg import orth
from refdlrt.tensor.tucker import Tucker, multi_mode_product, unfold
from refdlrt.tolerances import tolerance
from refdlrt.validation import Check, ClaimResult, check_names, claim_names, run_claim
from refdlrt.validation.command import main as validate_main

TOL = tolerance(np.float64)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fro(a) -> float:
    return float(np.linalg.norm(to_numpy(a).ravel()))


# --- the discrete approximation bound (ALGORITHM.md §4) -----------------------------------


def discrete_bound_run(xp, shape, ranks, seed, frac, tau, L, mu, steps=8):
    """Dense GD W_j and TDLRT Y_j from W_0 = Y_0; per k: (||W_k - Y_k||, Σ_j ρ^{k-1-j} δ_j, ||W_k||)."""
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng, xp=xp)
    prob = random_quadratic(shape, rng, L=L, mu=mu, xp=xp)
    lr = frac / prob.smoothness  # λ <= 1/L
    rho = prob.contraction(lr)  # ||I - λ A^T A||_2
    W, bound, out = Y.to_tensor(), 0.0, []
    for _ in range(steps):
        Y, info = integrator.tdlrt_step(Y, prob.gradient(Y.to_tensor()), lr, tau)
        delta = lr * info.normal_grad_norm + info.truncation_error  # δ_j
        bound = rho * bound + delta  # Σ_{j<k} ρ^{k-1-j} δ_j, by Horner
        W = W - lr * prob.gradient(W)  # dense gradient descent
        out.append((fro(W - Y.to_tensor()), bound, fro(W)))
    return out


@given(cfg=tucker_configs(), frac=st.sampled_from([0.2, 0.5, 1.0]),
       tau=st.sampled_from([0.0, 0.01, 0.1, 0.3]), L=st.sampled_from([0.5, 1.0, 3.0]),
       mu_frac=st.sampled_from([0.0, 0.5]))
@settings(max_examples=30)
def test_tdlrt_stays_within_the_discrete_approximation_bound(xp, cfg, frac, tau, L, mu_frac):
    shape, ranks, seed = cfg
    for k, (err, bound, w) in enumerate(discrete_bound_run(xp, shape, ranks, seed, frac, tau, L,
                                                           mu_frac * L), 1):
        # rounding allowance: rtol of the float64 row times the size of the iterates
        assert err <= bound * (1 + TOL.rtol) + TOL.rtol * max(w, 1.0), (k, err, bound)


def test_discrete_approximation_bound_is_tight():
    """On random problems the error reaches a sizeable fraction of the bound, so the property
    test above can fail. Measured (24 problems, 8 steps, τ = 0.1, λ = 1/L): error/bound after
    one step is 0.95-1.0, then it decays slowly (0.09-0.42 after 8 steps, median 0.16)."""
    rng = np.random.default_rng(2024)
    first, worst = [], []
    for _ in range(24):
        d = int(rng.integers(2, 4))
        shape = tuple(int(n) for n in rng.integers(3, 6, size=d))
        ranks = tuple(max(1, n // 3) for n in shape)
        seed = int(rng.integers(2**31))
        res = discrete_bound_run(np, shape, ranks, seed, 1.0, 0.1, 1.0, 0.0)
        assert all(b > 1e-3 for _, b, _ in res)  # the bound is far from rounding level here
        first.append(res[0][0] / res[0][1])
        worst.append(min(e / b for e, b, _ in res))
    assert np.median(first) >= 0.9  # one step: the bound is attained
    assert min(worst) >= 0.05  # never off by more than a factor 20 within 8 steps


# --- the quick run of every claim, through the command -------------------------------------


def test_quick_validation_of_every_claim_passes(tmp_path):
    """``refdlrt validate --quick``: every claim holds (GPU skipped without one), the report
    and results.json are written, the exit code is 0."""
    out = tmp_path / "v"
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: BLAS threads only contend
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-m", "refdlrt.validation.command", "--quick",
                           "--out", str(out)], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in results] == claim_names()
    for r in results:
        assert r["ok"], (r["name"], r["details"].get("checks"), r["details"].get("error"))
        assert {"name", "ok", "measured", "bound"} <= set(r)
    gpu = results[-1]
    assert gpu["status"] == ("OK" if gpu_available() else "SKIPPED")
    report = (out / "report.md").read_text()
    for r in results:
        for p in r["plots"]:
            assert (out / p).stat().st_size > 1000  # a real PNG
            assert f"]({p})" in report
    assert "NOT OK" not in proc.stdout


# --- the tester tested: planted bugs must be caught ----------------------------------------


def lift_zero_padded(C, M_hats):
    """Bug (a): C zero-padded to the augmented shape instead of C x_i M̂_i."""
    xp = get_xp(C)
    out = xp.zeros(tuple(int(M.shape[0]) for M in M_hats), dtype=C.dtype)
    out[tuple(slice(0, n) for n in C.shape)] = C
    return out


def hosvd_right_vectors(T, *, tau=None, r_min=1, r_max=None):
    """Bug (b): the τ-rule truncation with the right singular vectors Z_i of Mat_i(T) in place of
    the left ones P_i (shapes fit for square matrices; otherwise it raises)."""
    xp = get_xp(T)
    d = T.ndim
    norm = float(xp.linalg.norm(T.reshape(-1)))
    theta = tau * norm
    lo = [r_min] * d if isinstance(r_min, int) else list(r_min)
    hi = list(T.shape) if r_max is None else ([r_max] * d if isinstance(r_max, int) else list(r_max))
    bases, sigmas, ranks, tails = [], [], [], []
    for i in range(d):
        _, s, Zt = xp.linalg.svd(unfold(T, i), full_matrices=False)
        r = truncation_rank(s, theta, min(lo[i], hi[i]), hi[i])
        if Zt.shape[1] != T.shape[i]:
            raise ValueError(f"right singular vectors have length {Zt.shape[1]}, mode {i} has "
                             f"{T.shape[i]}")
        bases.append(Zt.T[:, :r])
        sigmas.append(s)
        ranks.append(r)
        tails.append(float(tail_norms(s)[r]))
    core = multi_mode_product(T, bases, transpose=True)
    info = HOSVDInfo(tuple(sigmas), tuple(ranks), tuple(tails),
                     math.sqrt(sum(t * t for t in tails)), theta, norm)
    return Tucker(core, tuple(bases)), info


def augment_without_U(K, U, direction=None):
    """Bug (c): Û_i = orth(K_i), dropping U_i from the augmentation."""
    U_hat = orth(K)
    return U_hat, U_hat.T @ U


BUGS = {
    # name: (integrator attribute, replacement, claims that must fail, (claim, check) caught
    #        by a failed inequality rather than by an exception)
    "skip the lift": ("lift", lift_zero_padded, ("orthonormality", "descent", "exactness"),
                      ("orthonormality", "lift error")),
    "right singular vectors": ("hosvd", hosvd_right_vectors, ("truncation", "descent", "exactness"),
                               ("truncation", "truncations: max ||T - T_new||")),
    "no U_i in the augmentation": ("augment", augment_without_U, ("orthonormality", "descent"),
                                   ("descent", "min ||grad_C L|| / ||G x_i U_i^T||")),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bug_really_changes_the_step(monkeypatch, bug):
    """Before relying on them: each planted bug changes one step on a square d = 2 problem."""
    attr, fn, _, _ = BUGS[bug]
    rng = np.random.default_rng(5)
    Y = random_tucker((6, 6), (2, 2), rng)
    G = random_quadratic((6, 6), rng).gradient(Y.to_tensor())
    good, info = integrator.tdlrt_step(Y, G, 0.5, 0.3)
    assert info.ranks_after != info.ranks_augmented  # the truncation does cut
    monkeypatch.setattr(integrator, attr, fn)
    bad, _ = integrator.tdlrt_step(Y, G, 0.5, 0.3)
    # far above rounding (1e-16): the bug changes the result, not just its representation
    assert fro(good.to_tensor() - bad.to_tensor()) > 1e-3 * fro(good.to_tensor())


@pytest.mark.parametrize("bug", list(BUGS))
def test_planted_bug_is_reported_not_ok(monkeypatch, tmp_path, capsys, bug):
    attr, fn, claims, (caught_by, label) = BUGS[bug]
    monkeypatch.setattr(integrator, attr, fn)
    rc = validate_main(["--quick", "--only", ",".join(claims), "--out", str(tmp_path)])
    assert rc == 1
    assert "NOT OK" in capsys.readouterr().out
    results = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert set(results) == set(claims)
    for name in claims:
        assert not results[name]["ok"] and results[name]["status"] == "NOT OK", name
    failed = [c["label"] for c in results[caught_by]["details"]["checks"] if not c["ok"]]
    assert any(label in f for f in failed), failed


# --- the runner, the verdicts and the command line -----------------------------------------


def test_check_margins_and_verdicts():
    assert Check("a", 1.0, 4.0).ok and Check("a", 1.0, 4.0).margin == 4.0
    assert not Check("a", 5.0, 4.0).ok and Check("a", 5.0, 4.0).margin == 0.8
    assert Check("b", 6.0, 3.0, ">=").ok and Check("b", 6.0, 3.0, ">=").margin == 2.0
    assert not Check("b", 1.0, 3.0, ">=").ok
    assert Check("c", 0.0, 0.0).ok and Check("c", 0.0, 0.0).margin == math.inf
    assert not Check("d", math.nan, 1.0).ok
    res = ClaimResult.from_checks("x", "claim", [Check("loose", 1.0, 100.0),
                                                 Check("tight", 1.0, 2.0),
                                                 Check("sanity", 1.0, 1.0, ">=", main=False)])
    assert res.ok and res.details["headline"] == "tight" and res.margin == 2.0
    res = ClaimResult.from_checks("x", "claim", [Check("fine", 1.0, 2.0), Check("bad", 3.0, 2.0)])
    assert not res.ok and res.status == "NOT OK" and res.details["headline"] == "bad"
    assert not ClaimResult.from_checks("x", "claim", []).ok
    assert ClaimResult.skipped("gpu", "claim", "no GPU").status == "SKIPPED"


def test_a_claim_that_raises_is_not_ok(monkeypatch, tmp_path):
    import refdlrt.validation.exactness as exactness

    def boom(**kw):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(exactness, "run", boom)
    res = run_claim("exactness", quick=True, seed=0, xp=np, out=str(tmp_path))
    assert not res.ok and "planted failure" in res.details["error"]


def test_only_validates_names(capsys):
    assert check_names("descent,exactness") == ["descent", "exactness"]
    assert check_names(["exactness", "descent"]) == ["descent", "exactness"]  # report order
    with pytest.raises(ValueError, match="valid names are: orthonormality, truncation"):
        check_names("descent,nonsense")
    with pytest.raises(SystemExit):
        validate_main(["--only", "nonsense"])
    err = capsys.readouterr().err
    assert "nonsense" in err and "rank_adaptivity" in err


@pytest.mark.skipif(gpu_available(), reason="checks the error raised when there is no GPU")
def test_cupy_backend_without_gpu_is_a_clear_error(capsys, tmp_path):
    assert validate_main(["--backend", "cupy", "--only", "exactness", "--out", str(tmp_path)]) == 2
    assert "needs CuPy and a usable GPU" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_gpu_claim_comparison_logic_runs_on_numpy(tmp_path):
    """The GPU claim's comparison, run NumPy against NumPy: identical trajectories."""
    from refdlrt.validation.gpu import compare_backends

    checks, details = compare_backends(np, np, quick=True, seed=0, out=str(tmp_path),
                                       names=("exactness",), training=False)
    assert all(c.ok for c in checks)
    assert details["exactness"]["difference"] == 0.0
