"""Claim 2: the HOSVD truncation of a TDLRT step stays within its a-priori bounds.

Claim: the truncation of step 8-9 (``refdlrt.dlrt.integrator.truncate``, the integrator's own
route) removes ||T - T_new||_F² <= Σ_i Σ_{j>r_i'} σ_{i,j}² <= d ϑ², ϑ = τ ||T||_F, picks for
every mode the smallest rank with tail <= ϑ, and with τ = 0 removes only rounding-level mass.

Measured, on many random tensors (d = 2, 3, 4, geometric or exactly-low-rank spectra) and
tolerances τ: the error ||T - T_new|| recomputed densely here, the tails from our own SVDs of
the unfoldings of T, and ϑ. Then, inside real TDLRT steps on random quadratics, η =
||Ỹ - Y_new|| recomputed densely (Ỹ: the same step with τ = 0), ``StepInfo.truncation_error``
and ``StepInfo.truncation_bound`` against √d ϑ. Every bound gets the rounding allowance
rtol·||T||_F of the float64 tolerance row.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..dlrt import integrator
from ..dlrt.problems import random_quadratic, random_tucker
from ..tensor.tucker import multi_mode_product, unfold
from . import Check, ClaimResult
from ._common import TOL, fro, orthogonal, pyplot, save

NAME = "truncation"
CLAIM = ("The HOSVD truncation removes ||T - T_new||_F^2 <= sum_i sum_{j>r_i'} sigma_ij^2 <= d theta^2 "
         "(theta = tau ||T||_F), with the smallest admissible ranks; tau = 0 removes only rounding.")

TAUS = (0.0, 1e-3, 1e-2, 0.05, 0.1, 0.3, 0.7)


def _random_tensor(rng, xp, square_matrix=False):
    """A tensor with geometric (or exactly cut-off) unfolding spectra, d in {2, 3, 4}."""
    d = 2 if square_matrix else int(rng.integers(2, 5))
    top = 7 if d < 4 else 5
    shape = tuple(int(n) for n in rng.integers(2, top + 1, size=d))
    if square_matrix:  # the matrix (d = 2) case with n_0 = n_1, matrix DLRT's core
        shape = (shape[0] + 1, shape[0] + 1)
    core = rng.standard_normal(shape)
    scales = []
    for n in shape:
        s = rng.uniform(0.2, 0.9) ** np.arange(n)
        if rng.random() < 0.3:  # exactly low rank in this mode
            s[int(rng.integers(1, n + 1)):] = 0.0
        scales.append(np.diag(s))
    T = multi_mode_product(multi_mode_product(core, scales), [orthogonal(n, n, rng) for n in shape])
    return xp.asarray(T)


def _tails(T, ranks):
    """tail_i = (Σ_{j > r_i} σ_{i,j}²)^{1/2} of Mat_i(T), from NumPy SVDs done here."""
    Tn = to_numpy(T)
    out = []
    for i, r in enumerate(ranks):
        s = np.linalg.svd(unfold(Tn, i), compute_uv=False)
        out.append(float(np.sqrt(np.sum(s[r:] ** 2))))
    return out


def _rule_violations(T, ranks, theta):
    """Modes whose rank is not the smallest r with tail(r) <= ϑ (clear-cut cases only), after
    the compatibility cut r_i <= Π_{j≠i} r_j that `truncate` applies (an exact cut)."""
    Tn, rule, ambiguous = to_numpy(T), [], set()
    for i in range(len(ranks)):
        s = np.linalg.svd(unfold(Tn, i), compute_uv=False)
        tails = np.sqrt(np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]]))
        if np.any(np.abs(tails - theta) <= 1e-8 * max(theta, 1e-300)):
            ambiguous.add(i)  # a tail within rounding of ϑ: either rank is right
        rule.append(max(1, int(np.argmax(tails <= theta))))
    if ambiguous:
        return 0
    expected = integrator.compatible_ranks(rule)
    return sum(int(r != e) for r, e in zip(ranks, expected))


def _hosvd_cases(n_tensors, rng, xp, failures):
    rows = []
    for k in range(n_tensors):
        T = _random_tensor(rng, xp, square_matrix=k % 4 == 0)
        d, nT = T.ndim, fro(T)
        eyes = [xp.eye(n) for n in T.shape]
        for tau in TAUS:
            try:
                Y, _, eta = integrator.truncate(T, eyes, tau, r_min=[1] * d, r_max=list(T.shape))
            except Exception as e:  # noqa: BLE001 - a crash is a failed case, counted below
                failures.append(f"truncate, shape {tuple(T.shape)}, tau {tau}: {e!r}")
                continue
            err = fro(T - Y.to_tensor())
            bound = math.sqrt(sum(t * t for t in _tails(T, Y.ranks)))
            theta = tau * nT
            rows.append(dict(d=d, tau=tau, norm=nT, err=err, bound=bound, theta=theta, eta=eta,
                             rule_bad=_rule_violations(T, Y.ranks, theta) if tau > 0 else 0))
    return rows


def _step_cases(n_runs, rng, xp, failures):
    rows = []
    for k in range(n_runs):
        shape = ((6, 6), (5, 4, 4), (4, 4, 3, 3))[k % 3]
        ranks = tuple(max(1, n // 2) for n in shape)
        Y = random_tucker(shape, ranks, rng, xp=xp)
        prob = random_quadratic(shape, rng, L=1.0, xp=xp)
        tau = (0.01, 0.1, 0.3)[k % 3]
        try:
            for _ in range(6):
                G = prob.gradient(Y.to_tensor())
                Y_tilde, _ = integrator.tdlrt_step(Y, G, 0.5, 0.0)
                Y_new, info = integrator.tdlrt_step(Y, G, 0.5, tau)
                eta = fro(Y_tilde.to_tensor() - Y_new.to_tensor())
                rows.append(dict(d=len(shape), eta=eta, eta_info=info.truncation_error,
                                 bound=info.truncation_bound, theta=info.theta,
                                 norm=fro(Y_tilde.core)))
                Y = Y_new
        except Exception as e:  # noqa: BLE001 - a crash is a failed case, counted below
            failures.append(f"tdlrt_step, shape {shape}: {e!r}")
    return rows


def _max(values) -> float:
    return max(values) if values else math.nan  # no case ran: NaN fails the check


def _median(values) -> float:
    return float(np.median(values)) if values else math.nan


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    failures = []
    hos = _hosvd_cases(40 if quick else 500, rng, xp, failures)
    steps = _step_cases(9 if quick else 60, rng, xp, failures)
    slack = TOL.rtol  # rounding allowance, relative to ||T||_F
    r_err = [r["err"] / (r["bound"] + slack * r["norm"]) for r in hos]
    r_bound = [r["bound"] / (math.sqrt(r["d"]) * r["theta"] + slack * r["norm"]) for r in hos]
    zero = [r["err"] / r["norm"] for r in hos if r["tau"] == 0.0]
    r_eta = [abs(r["eta"] - r["err"]) / r["norm"] for r in hos]
    s_err = [r["eta"] / (r["bound"] + slack * r["norm"]) for r in steps]
    s_bound = [r["bound"] / (math.sqrt(r["d"]) * r["theta"] + slack * r["norm"]) for r in steps]
    s_eta = [abs(r["eta"] - r["eta_info"]) / r["norm"] for r in steps]
    checks = [
        Check("cases that raised an exception", len(failures), 0),
        Check(f"{len(hos)} truncations: max ||T - T_new|| / (a-priori bound + rtol||T||)",
              _max(r_err), 1.0),
        Check("max a-priori bound / (sqrt(d) theta + rtol||T||)", _max(r_bound), 1.0),
        Check("tau = 0: max ||T - T_new|| / ||T||", _max(zero), TOL.rtol),
        Check("modes whose rank is not the smallest with tail <= theta",
              sum(r["rule_bad"] for r in hos), 0),
        Check("reported eta vs dense recomputation: max |difference| / ||T||", _max(r_eta), TOL.rtol),
        Check(f"{len(steps)} TDLRT steps: max eta / (StepInfo bound + rtol||Ỹ||)", _max(s_err), 1.0),
        Check("TDLRT steps: max StepInfo bound / (sqrt(d) theta + rtol||Ỹ||)", _max(s_bound), 1.0),
        Check("TDLRT steps: StepInfo.truncation_error vs dense eta, max diff / ||Ỹ||", _max(s_eta),
              TOL.rtol),
    ]
    details = dict(n_truncations=len(hos), n_steps=len(steps), taus=list(TAUS),
                   failures=failures[:5],
                   tightness_err_over_bound=_median([r["err"] / r["bound"]
                                                     for r in hos if r["bound"] > 0]))
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, [_plot(hos, out)])


def _plot(rows, out):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    cmap = plt.get_cmap("viridis")
    for j, tau in enumerate(t for t in TAUS if t > 0):
        sel = [r for r in rows if r["tau"] == tau and r["bound"] > 0]
        c = cmap(j / (len(TAUS) - 1))
        axes[0].loglog([r["bound"] for r in sel], [r["err"] for r in sel], ".", color=c,
                       label=f"tau={tau:g}")
        axes[1].loglog([math.sqrt(r["d"]) * r["theta"] for r in sel], [r["bound"] for r in sel],
                       ".", color=c, label=f"tau={tau:g}")
    for ax, (xl, yl) in zip(axes, [("a-priori bound (sum of tails^2)^1/2", "||T - T_new||_F"),
                                   ("sqrt(d) theta", "a-priori bound")]):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x (bound)")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
    axes[0].set_title("error below the a-priori bound")
    axes[1].set_title("a-priori bound below sqrt(d) theta")
    return save(fig, out, "02_truncation.png")
