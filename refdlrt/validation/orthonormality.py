"""Claim 1: orthonormality of the bases and exactness of the lift over long runs.

Claim: over long rank-adaptive runs (orders d = 2, 3, 4; targets of different Tucker ranks
alternating, so ranks grow and shrink) every step keeps ||U_i^T U_i - I||_F <= ortho·sqrt(n)
and ||Ĉ x_i Û_i - Y||_F <= rtol·max(||Y||_F, 1) (float64 rows of the tolerance table).

Measured per step: the orthonormality error of the new bases, recomputed here from the
factors, and ``StepInfo.lift_error`` (the integrator's Ĉ x_i Û_i - Y). Independently of the
integrator's diagnostics, every few steps a step with a zero gradient and τ = 0 must return Y
(K_i = U_i R_i^T spans range(U_i), so the step is the identity exactly when the lift is exact).
"""

from __future__ import annotations

import math

import numpy as np

from ..dlrt.integrator import tdlrt_step
from ..dlrt.problems import TargetProblem, random_tucker
from ..tensor.linalg import orthonormality_error
from . import Check, ClaimResult
from ._common import TOL, fro, pyplot, record, save

NAME = "orthonormality"
CLAIM = ("Over long rank-adaptive runs (d = 2, 3, 4, ranks growing and shrinking) every step keeps "
         "max_i ||U_i^T U_i - I||_F <= 1e-13·sqrt(n) and the lift error "
         "||Ĉ x_i Û_i - Y||_F <= 1e-10·max(||Y||_F, 1).")

CASES = (  # shape, low target rank, high target rank
    ((24, 20), (1, 1), (6, 6)),
    ((8, 7, 6), (1, 1, 1), (4, 4, 3)),
    ((6, 5, 4, 4), (1, 1, 1, 1), (3, 3, 2, 2)),
)


def _run_case(shape, low, high, steps, period, rng, xp):
    """Alternate between a low- and a high-rank target every ``period`` steps."""
    targets = [TargetProblem(random_tucker(shape, r, rng, xp=xp).to_tensor()) for r in (high, low)]
    Y = random_tucker(shape, [max(1, r // 2) for r in high], rng, xp=xp, core_scale=0.5)
    lrs = (0.3, 0.6, 0.9)  # cycle through step sizes λ L in (0, 1)
    trace, identity_errors = {}, []
    for k in range(steps):
        prob = targets[(k // period) % 2]
        Y_new, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), lrs[k % 3], 0.03)
        ortho = max(orthonormality_error(U) for U in Y_new.factors)
        record(trace, ortho=ortho, lift=info.lift_error / max(fro(Y.core), 1.0),
               rank=sum(Y_new.ranks))
        if k % period == period // 2:
            Y_same, _ = tdlrt_step(Y_new, xp.zeros(shape), 0.5, 0.0)
            identity_errors.append(fro(Y_same.to_tensor() - Y_new.to_tensor())
                                   / max(fro(Y_new.core), 1.0))
        Y = Y_new
    return trace, identity_errors


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    steps, period = (240, 40) if quick else (3000, 100)
    checks, details, traces = [], {"steps_per_order": steps}, {}
    for shape, low, high in CASES:
        d = len(shape)
        trace, ident = _run_case(shape, low, high, steps, period, rng, xp)
        traces[d] = trace
        ranks = np.array(trace["rank"])
        ups, downs = int((np.diff(ranks) > 0).sum()), int((np.diff(ranks) < 0).sum())
        ortho_bound = TOL.ortho * math.sqrt(max(shape))
        checks += [
            Check(f"d={d}: worst ||U^T U - I||_F over {steps} steps", max(trace["ortho"]),
                  ortho_bound),
            Check(f"d={d}: worst lift error / max(||Y||, 1)", max(trace["lift"]), TOL.rtol),
            Check(f"d={d}: zero-gradient tau=0 step returns Y (relative error)", max(ident),
                  TOL.rtol),
            Check(f"d={d}: rank increases seen", ups, 1, ">=", main=False),
            Check(f"d={d}: rank decreases seen", downs, 1, ">=", main=False),
        ]
        details[f"d={d}"] = dict(shape=shape, worst_ortho=max(trace["ortho"]),
                                 worst_lift=max(trace["lift"]), rank_ups=ups, rank_downs=downs)
    plots = [_plot(traces, out)]
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, plots)


def _plot(traces, out):
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for d, t in traces.items():
        k = np.arange(1, len(t["ortho"]) + 1)
        axes[0].semilogy(k, np.maximum(t["ortho"], 1e-18), lw=0.8, label=f"d={d}")
        axes[1].semilogy(k, np.maximum(t["lift"], 1e-18), lw=0.8, label=f"d={d}")
        axes[2].plot(k, t["rank"], lw=0.8, label=f"d={d}")
    axes[0].axhline(TOL.ortho * math.sqrt(24), color="k", ls="--", lw=1, label="bound (n=24)")
    axes[1].axhline(TOL.rtol, color="k", ls="--", lw=1, label="bound")
    axes[0].set_ylabel("max_i ||U_i^T U_i - I||_F")
    axes[1].set_ylabel("lift error / max(||Y||,1)")
    axes[2].set_ylabel("sum of ranks")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_title("Claim 1: orthonormality and lift exactness per step")
    return save(fig, out, "01_orthonormality.png")
