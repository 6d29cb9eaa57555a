"""Claim 7: from a high-rank start, rank-adaptive TDLRT finds the Tucker rank of the target.

Claim: for L(W) = ½||W - T||² with T = T_r + N (T_r of Tucker rank r, N a full-rank noise of
relative size 1e-4), started at a higher rank, TDLRT ends at exactly rank r for every τ inside
the window where the truncation rule can recognise r: the largest noise tail over the modes is
below ϑ = τ||T|| and the smallest tail of T_r when cut below r is above it. The τ's are taken
log-spaced inside [3 τ_lo, τ_hi / 3] of that window (computed here from the SVDs of the
unfoldings of T). One τ above the window is also run (plotted, not checked: it must find less).
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..dlrt.integrator import tdlrt_step
from ..dlrt.problems import TargetProblem, random_tucker
from ..tensor.tucker import unfold
from . import Check, ClaimResult
from ._common import fro, pyplot, save

NAME = "rank_adaptivity"
CLAIM = ("From a high-rank start, TDLRT on 1/2||W - T||^2 (T of known Tucker rank r plus 1e-4 "
         "noise) ends at exactly rank r for every tau inside the window where the truncation "
         "rule can recognise r.")

CASES = (((10, 10, 10), (2, 4, 3), (8, 8, 8)), ((8, 6, 3, 3), (3, 2, 2, 3), (6, 6, 3, 3)))


def _window(T, ranks):
    """(τ_lo, τ_hi): noise tails below ϑ and signal tails above ϑ, relative to ||T||."""
    Tn = to_numpy(T)
    norm, lo, hi = np.linalg.norm(Tn), 0.0, np.inf
    for i, r in enumerate(ranks):
        s = np.linalg.svd(unfold(Tn, i), compute_uv=False)
        lo = max(lo, np.sqrt(np.sum(s[r:] ** 2)) / norm)
        hi = min(hi, np.sqrt(np.sum(s[r - 1:] ** 2)) / norm)
    return float(lo), float(hi)


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    steps = 50 if quick else 200
    checks, curves, details = [], {}, {}
    for shape, r_true, start in CASES:
        T_r = random_tucker(shape, r_true, rng, xp=xp).to_tensor()
        noise = xp.asarray(rng.standard_normal(shape))
        T = T_r + noise * (1e-4 * fro(T_r) / fro(noise))
        lo, hi = _window(T, r_true)
        taus = list(np.geomspace(3 * lo, hi / 3, 3 if quick else 5)) if 9 * lo < hi else []
        prob = TargetProblem(T)
        Y0 = random_tucker(shape, start, rng, xp=xp, core_scale=0.3)
        for tau in taus + [min(3 * hi, 0.9)]:
            Y, ranks = Y0, [Y0.ranks]
            for _ in range(steps):
                Y, _ = tdlrt_step(Y, prob.gradient(Y.to_tensor()), 0.5, float(tau),
                                  diagnostics=False)
                ranks.append(Y.ranks)
            curves[(len(shape), float(tau))] = ranks
            if tau in taus:
                checks.append(Check(f"d={len(shape)}, tau={tau:.2g}: modes whose final rank != "
                                    f"{r_true}", sum(a != b for a, b in zip(Y.ranks, r_true)), 0))
        checks.append(Check(f"d={len(shape)}: tau window [{3 * lo:.2g}, {hi / 3:.2g}] not empty",
                            len(taus), 1, ">=", main=False))
        details[f"d={len(shape)}"] = dict(shape=shape, ranks=r_true, start=start, window=(lo, hi),
                                          taus=taus, final={str(t): c[-1] for (dd, t), c
                                                            in curves.items() if dd == len(shape)})
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, [_plot(curves, out)])


def _plot(curves, out):
    plt = pyplot()
    ds = sorted({d for d, _ in curves})
    fig, axes = plt.subplots(1, len(ds), figsize=(6 * len(ds), 4.2), squeeze=False)
    for ax, d in zip(axes[0], ds):
        items = [(t, c) for (dd, t), c in curves.items() if dd == d]
        for n, (tau, ranks) in enumerate(items):
            R = np.array(ranks)
            for i in range(R.shape[1]):
                ax.plot(R[:, i], color=f"C{n}", ls=("-", "--", ":", "-.")[i], lw=1.2,
                        label=f"tau={tau:.2g}" if i == 0 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("rank r_i (line style = mode i)")
        ax.set_title(f"d = {d}: ranks over time")
        ax.legend(fontsize=7)
    return save(fig, out, "07_rank_adaptivity.png")
