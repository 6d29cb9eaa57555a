"""Claim 5: exactness of the BUG step (Ceruti & Lubich), fixed-rank and rank-adaptive.

Claim: if A(t) = C(t) x_i U_i(t) keeps Tucker rank r on [t_0, t_1], Y^0 = A(t_0) and the loss
gradient is the constant G = -(A(t_1) - A(t_0))/λ, one step returns A(t_1) up to rounding:
||Y^1 - A(t_1)||_F <= rtol·κ·||A(t_1)||_F, κ = max_i cond(Mat_i(C(t_1))) (rounding in the
QR/SVD solves is amplified by the conditioning of the core unfoldings), with rank r for the
fixed-rank step and for the adaptive step with τ = 1e-10 (the adaptive step with τ = 0 keeps
rounding-level directions, so only its tensor is checked).

Measured over many random curves (d = 2, 3, 4; U_i(t) = qr(U_i + t V_i), C(t) = C + t D).
"""

from __future__ import annotations

import math

import numpy as np

from ..dlrt.integrator import tdlrt_step
from ..dlrt.problems import LinearProblem
from ..tensor.tucker import Tucker, multi_mode_product, unfold
from . import Check, ClaimResult
from ._common import TOL, fro, pyplot, save

NAME = "exactness"
CLAIM = ("For a constant gradient -(A(t1) - A(t0))/lr along a curve A(t) of fixed Tucker rank, one "
         "step from A(t0) returns A(t1): ||Y1 - A(t1)|| <= 1e-10 kappa ||A(t1)|| (kappa: condition "
         "number of the core unfoldings), fixed-rank and rank-adaptive, with the right ranks.")

VARIANTS = (("fixed rank", dict(fixed_rank=True, tau=0.0)),
            ("adaptive, tau = 1e-10", dict(tau=1e-10)),
            ("adaptive, tau = 0", dict(tau=0.0)))


def _config(rng):
    d = int(rng.integers(2, 5))
    shape = tuple(int(n) for n in rng.integers(3, 8 if d < 4 else 6, size=d))
    ranks = [int(rng.integers(1, n)) for n in shape]
    for _ in range(d):  # compatible: r_i <= prod_{j != i} r_j
        ranks = [min(r, math.prod(ranks) // r) for r in ranks]
    return shape, tuple(ranks)


def _curve(shape, ranks, rng):
    U0 = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, ranks)]
    V = [rng.standard_normal((n, r)) for n, r in zip(shape, ranks)]
    C0, D = rng.standard_normal(ranks) + 2.0, rng.standard_normal(ranks)

    def A(t):
        return C0 + t * D, [np.linalg.qr(U + t * Vi)[0] for U, Vi in zip(U0, V)]

    return A


def _kappa(C):
    out = 1.0
    for i in range(C.ndim):
        s = np.linalg.svd(unfold(C, i), compute_uv=False)
        out = max(out, s[0] / s[-1])
    return out


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    lr, t0, t1 = 0.7, 0.0, 0.3
    rows = {name: [] for name, _ in VARIANTS}
    rank_bad = {name: 0 for name, _ in VARIANTS}
    n_cases = 40 if quick else 400
    for _ in range(n_cases):
        shape, ranks = _config(rng)
        A = _curve(shape, ranks, rng)
        (C0, U0), (C1, U1) = A(t0), A(t1)
        A0, A1 = multi_mode_product(C0, U0), multi_mode_product(C1, U1)
        G = LinearProblem(xp.asarray(-(A1 - A0) / lr)).gradient(None)
        Y0 = Tucker(xp.asarray(C0), tuple(xp.asarray(U) for U in U0))
        kappa = _kappa(C1)
        for name, kw in VARIANTS:
            Y1, info = tdlrt_step(Y0, G, lr, kw["tau"], fixed_rank=kw.get("fixed_rank", False))
            err = fro(Y1.to_tensor() - xp.asarray(A1)) / np.linalg.norm(A1)
            rows[name].append(dict(err=err, kappa=kappa, d=len(shape), norm=fro(Y1.core)))
            if name != "adaptive, tau = 0":
                rank_bad[name] += int(tuple(info.ranks_after) != tuple(ranks))
    checks = []
    for name, _ in VARIANTS:
        checks.append(Check(f"{name}: max ||Y1 - A(t1)|| / (kappa ||A(t1)||) over {n_cases} curves",
                            max(r["err"] / r["kappa"] for r in rows[name]), TOL.rtol))
    for name in ("fixed rank", "adaptive, tau = 1e-10"):
        checks.append(Check(f"{name}: steps whose ranks differ from r", rank_bad[name], 0))
    details = dict(n_cases=n_cases, worst_error={k: max(r["err"] for r in v)
                                                 for k, v in rows.items()},
                   trace=[r["norm"] for r in rows["fixed rank"]])
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, [_plot(rows, out)])


def _plot(rows, out):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for (name, v), mk in zip(rows.items(), "o^s"):
        ax.loglog([r["kappa"] for r in v], [max(r["err"], 1e-18) for r in v], mk, ms=4,
                  mfc="none", label=name)
    k = np.logspace(0, np.log10(max(r["kappa"] for v in rows.values() for r in v)) + 0.2, 20)
    ax.loglog(k, TOL.rtol * k, "k--", lw=1, label="bound rtol kappa")
    ax.set_xlabel("kappa = max_i cond(Mat_i(C(t1)))")
    ax.set_ylabel("||Y1 - A(t1)|| / ||A(t1)||")
    ax.set_title("Claim 5: one BUG step reproduces A(t1)")
    ax.legend(fontsize=7)
    return save(fig, out, "05_exactness.png")
