"""Claim 6: TDLRT is robust to small singular values; gradient descent on the factors is not.

Claim: on a flow that keeps the Tucker rank (L(W) = ½<W, Σ_i W x_i A_i>, exact flow
W(t) = W(0) x_i e^{-t A_i}, ε = 0), started from cores whose unfoldings have singular values
spread over κ = 10^2 .. 10^8 (and more in full mode), the fixed-rank TDLRT error at t = 1 is
O(λ) (slope 1 ± 0.2) with a constant that does not grow as the small singular values shrink
(max over κ of the error / the error at the smallest κ <= 2), while plain gradient descent on
(C, U_i) (``naive_factor_step``) follows a different flow whose error does not vanish with λ:
at the smallest λ it is at least 10 times the TDLRT error (it drifts). With the core scaled
so that σ_max = 10 it diverges unless λ ≲ 2/(σ_max² L) (it needs a vanishing step).

Cores: superdiagonal s_j (log-spaced from σ_max down to σ_max/κ) rotated in every mode, so every
unfolding has exactly the singular values s_j.
"""

from __future__ import annotations

import math

import numpy as np

from ..dlrt.baselines import naive_factor_step
from ..dlrt.integrator import tdlrt_step
from ..tensor.tucker import Tucker
from . import Check, ClaimResult
from ._common import fro, graded_core, kronecker_sum_problem, loglog_slope, orthogonal, pyplot, save

NAME = "robustness"
CLAIM = ("From cores with unfolding singular values spread over kappa = 1e2..1e8, TDLRT's error to "
         "the exact flow is O(lr) (slope 1 +- 0.2) with a constant that grows by at most 2x as "
         "kappa grows, while naive factor descent drifts (error >= 10x TDLRT's at the smallest lr).")


def _errors(prob, Y0, lrs, W1, naive: bool):
    out = []
    for lr in lrs:
        Y = Y0
        with np.errstate(all="ignore"):  # naive descent may overflow: that is the finding
            for _ in range(round(1.0 / lr)):
                G = prob.gradient(Y.to_tensor())
                if naive:
                    Y = naive_factor_step(Y.core, Y.factors, G, lr)
                    if not math.isfinite(fro(Y.core)):
                        break
                else:
                    Y, _ = tdlrt_step(Y, G, lr, 0.0, fixed_rank=True, diagnostics=False)
            e = fro(Y.to_tensor() - W1) / fro(W1)
        out.append(e if math.isfinite(e) else math.inf)
    return out


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    shape, r = (8, 7, 6), 3
    prob = kronecker_sum_problem(shape, rng, L=1.0, xp=xp)
    Us = tuple(xp.asarray(orthogonal(n, r, rng)) for n in shape)
    core_rng_seed = int(rng.integers(2**31))
    kappas = [1e2, 1e4, 1e8] if quick else [1e2, 1e4, 1e6, 1e8, 1e12]
    lrs = [0.2 / 2**j for j in range(4 if quick else 6)]
    res = {}
    for scale in (1.0, 10.0):
        for kappa in kappas if scale == 1.0 else kappas[-1:]:
            s = scale * np.logspace(0, -math.log10(kappa), r)
            core = graded_core(s, np.random.default_rng(core_rng_seed))  # same rotations for all
            Y0 = Tucker(xp.asarray(core), Us)
            W1 = prob.flow(Y0.to_tensor(), 1.0)
            res[(scale, kappa)] = dict(tdlrt=_errors(prob, Y0, lrs, W1, False),
                                       naive=_errors(prob, Y0, lrs, W1, True))
    wide, ref = res[(1.0, kappas[-1])], res[(1.0, kappas[0])]
    growth = max(res[(1.0, k)]["tdlrt"][-1] for k in kappas) / ref["tdlrt"][-1]
    big = res[(10.0, kappas[-1])]
    stable = [lr for lr, e in zip(lrs, big["naive"]) if e < 1.0]
    checks = [
        Check(f"TDLRT, kappa = {kappas[-1]:.0e}: |slope - 1| of error vs lr",
              abs(loglog_slope(lrs, wide["tdlrt"]) - 1), 0.2),
        Check("TDLRT: max_kappa error / error at the smallest kappa (smallest lr)", growth, 2.0),
        Check(f"naive / TDLRT error at lr = {lrs[-1]:g}, kappa = {kappas[-1]:.0e}",
              wide["naive"][-1] / wide["tdlrt"][-1], 10.0, ">="),
    ]
    details = dict(lrs=lrs, kappas=kappas,
                   errors={f"scale={s:g}, kappa={k:.0e}": v for (s, k), v in res.items()},
                   trace=wide["tdlrt"],
                   notes=[f"sigma_max = 10: naive factor descent stays bounded only for lr in "
                          f"{stable or 'none of the grid'}; TDLRT's relative error is unchanged "
                          f"({big['tdlrt'][-1]:.3g} at lr = {lrs[-1]:g})."])
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, [_plot(res, lrs, out)])


def _plot(res, lrs, out):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = plt.get_cmap("plasma")
    for n, ((scale, kappa), v) in enumerate(res.items()):
        col = cmap(n / max(len(res), 1))
        lab = f"kappa={kappa:.0e}" + ("" if scale == 1.0 else f", sigma_max={scale:g}")
        ax.loglog(lrs, v["tdlrt"], "o-", color=col, label=f"TDLRT {lab}")
        naive = [e if math.isfinite(e) and e < 1e3 else np.nan for e in v["naive"]]
        ax.loglog(lrs, naive, "x--", color=col, label=f"naive {lab}")
    ax.set_xlabel("lr")
    ax.set_ylabel("relative error to the exact flow at t = 1")
    ax.set_title("Claim 6: TDLRT (solid) vs naive factor descent (dashed; missing = diverged)")
    ax.legend(fontsize=6, ncol=2)
    return save(fig, out, "06_robustness.png")
