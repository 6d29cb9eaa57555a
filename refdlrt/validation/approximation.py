"""Claim 4: TDLRT approximates dense training: ||W(t_k) - Y^k|| <= c_1 ε + c_2 λ + c_3 ϑ/λ.

Three experiments against an exact dense gradient flow W(t) (ALGORITHM.md §4):

(a) ε = 0, ϑ = 0: L(W) = ½<W, Σ_i W x_i A_i> (symmetric A_i) has the exact flow
    W(t) = W(0) x_i e^{-t A_i}, which keeps the Tucker rank (its gradient is tangent to the
    manifold). The fixed-rank BUG integrator (ϑ = 0) and the rank-adaptive one with τ = 0 then
    have error O(λ) at t = 1: the log-log slope of error against λ must be 1 ± 0.2.
(b) ϑ > 0: L(W) = ½||W - T||² with a full-rank target whose unfolding spectra decay
    geometrically, so every step's truncation removes mass; W(t) = T + e^{-t}(W(0) - T). Over a
    grid of (λ, τ), with t = kλ = 2:
    - rigorous form, at every grid point: ||W(t) - Y^k|| <= ||W(t) - W_k|| + t ε + t √d ϑ/λ,
      where W_k is dense gradient descent (its distance to the flow, the O(λ) term, is known
      exactly here), ε = max_j ||(I - P_j) grad L(Y_j)|| and ϑ = max_j ϑ_j along the run
      (the discrete bound of ALGORITHM.md §4 with ρ = 1 - λ <= 1 and η_j <= √d ϑ_j);
    - fitted form, reported and plotted but not pass/fail: c_0 + c_2 λ + c_3 ϑ̄/λ (ϑ̄: mean ϑ of
      the run; c_0 stands for c_1 ε) fitted by non-negative least squares on a checkerboard half
      of the grid and scaled to bound that half; the report gives the share of the other half
      it bounds and the worst ratio there. It is not a robust check: near the λ at which the
      new mass of a step, λ ||grad||, falls below ϑ the rank stops growing and the error jumps
      (a step-like dependence on λ that a three-term bound cannot follow point by point); over
      seeds 0-3 and both modes the fitted bound held on 83-100 % of the held-out points, with
      worst ratios up to 1.27. The rigorous form above is what is checked.
    - the error is U-shaped in λ for some τ > 0 (both ends of the λ range at least 1.5 times
      the best error).
(c) target off the manifold: T = T_r + E with E in the orthogonal complement of T_r's bases
    in every mode, so ε = ||E|| is the part of -grad L normal to the manifold at the limit. The
    fixed-rank error to W(t) plateaus at ε: error(t_end)/ε = 1 within 10 %, for several ε.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import nnls

from ..dlrt.integrator import tdlrt_step
from ..dlrt.problems import TargetProblem, random_tucker
from ..tensor.tucker import multi_mode_product
from . import Check, ClaimResult
from ._common import fro, kronecker_sum_problem, loglog_slope, orthogonal, pyplot, save

NAME = "approximation"
CLAIM = ("Error to the exact dense flow: O(lr) (slope 1 +- 0.2) when eps = theta = 0; with "
         "theta > 0 below Euler error + t eps + t sqrt(d) theta/lr on a whole (lr, tau) grid and "
         "U-shaped in lr (fitted c0 + c2 lr + c3 theta/lr plotted); plateau at eps (within 10 %) "
         "off the manifold.")


def _integrate(prob, Y, lr, t_end, **kw):
    """k = t_end / λ steps; returns (Y_k, per-step ϑ_j, per-step ||(I - P_j) grad L(Y_j)||)."""
    thetas, normal = [], []
    for _ in range(round(t_end / lr)):
        Y, info = tdlrt_step(Y, prob.gradient(Y.to_tensor()), lr, kw.get("tau", 0.0),
                             fixed_rank=kw.get("fixed_rank", False), diagnostics=False)
        thetas.append(info.theta)
        normal.append(info.normal_grad_norm)
    return Y, thetas, normal


# --- (a) ε = 0, ϑ = 0: first order -----------------------------------------------------------
def part_a(quick, rng, xp):
    shape, ranks = (8, 7, 6), (3, 3, 3)
    prob = kronecker_sum_problem(shape, rng, L=1.0, xp=xp)
    Y0 = random_tucker(shape, ranks, rng, xp=xp)
    W1 = prob.flow(Y0.to_tensor(), 1.0)
    lrs = [0.2 / 2**j for j in range(4 if quick else 7)]
    errs = {"fixed rank": [], "adaptive, tau = 0": []}
    for lr in lrs:
        Yf, _, _ = _integrate(prob, Y0, lr, 1.0, fixed_rank=True)
        Ya, _, _ = _integrate(prob, Y0, lr, 1.0, tau=0.0)
        errs["fixed rank"].append(fro(Yf.to_tensor() - W1) / fro(W1))
        errs["adaptive, tau = 0"].append(fro(Ya.to_tensor() - W1) / fro(W1))
    return lrs, errs


# --- (b) ϑ > 0: c_0 + c_2 λ + c_3 ϑ/λ ---------------------------------------------------------
def _geometric_target(shape, rng, xp, ratio=0.5, norm=10.0):
    core = rng.standard_normal(shape)
    core = multi_mode_product(core, [np.diag(ratio ** np.arange(n)) for n in shape])
    T = multi_mode_product(core, [orthogonal(n, n, rng) for n in shape])
    return xp.asarray(T * (norm / np.linalg.norm(T)))


def part_b(quick, rng, xp):
    shape, t_end = (8, 8, 8), 2.0
    prob = TargetProblem(_geometric_target(shape, rng, xp))
    Y0 = random_tucker(shape, (2, 2, 2), rng, xp=xp)
    D0 = fro(Y0.to_tensor() - prob.T)
    W_end = prob.T + math.exp(-t_end) * (Y0.to_tensor() - prob.T)
    lrs = [0.4 / 2**j for j in range(5 if quick else 7)]
    taus = [0.0, 1e-3, 3e-3, 1e-2, 3e-2] if quick else [0.0, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1]
    grid = []
    for i, tau in enumerate(taus):
        for j, lr in enumerate(lrs):
            Y, th, nrm = _integrate(prob, Y0, lr, t_end, tau=tau)
            k = len(th)
            euler = abs(math.exp(-t_end) - (1 - lr) ** k) * D0  # ||W(t_k) - W_k||, exact here
            a_priori = euler + t_end * max(nrm) + t_end * math.sqrt(len(shape)) * max(th) / lr
            grid.append(dict(i=i, j=j, tau=tau, lr=lr, theta=float(np.mean(th)),
                             theta_max=float(max(th)), eps=float(max(nrm)), euler=euler,
                             a_priori=a_priori, err=fro(Y.to_tensor() - W_end)))
    X = np.array([[1.0, g["lr"], g["theta"] / g["lr"]] for g in grid])
    e = np.array([g["err"] for g in grid])
    fit = np.array([(g["i"] + g["j"]) % 2 == 0 for g in grid])
    c, _ = nnls(X[fit], e[fit])
    model = X @ c
    scale = float(np.max(e[fit] / model[fit]))  # makes the fit a bound on its own half
    bound = scale * model
    u_depth = 0.0
    for tau in taus[1:]:
        row = [g["err"] for g in grid if g["tau"] == tau]
        k = int(np.argmin(row))
        if 0 < k < len(row) - 1:
            u_depth = max(u_depth, min(row[0], row[-1]) / row[k])
    return dict(lrs=lrs, taus=taus, grid=grid, c=c.tolist(), scale=scale, bound=bound.tolist(),
                held_out=float(np.max(e[~fit] / bound[~fit])),
                held_out_within=float(np.mean(e[~fit] <= bound[~fit])), u_depth=u_depth,
                a_priori_ratio=max(g["err"] / g["a_priori"] for g in grid))


# --- (c) off the manifold: plateau at ε --------------------------------------------------------
def part_c(quick, rng, xp):
    shape, r, lr, t_end = (8, 7, 6), 2, 0.25, 12.0
    Us = [orthogonal(n, n, rng) for n in shape]
    C = rng.standard_normal((r,) * 3) + 2.0  # well-conditioned core: T_r is the clear best fit
    T_r = multi_mode_product(C, [U[:, :r] for U in Us])
    E_dir = multi_mode_product(rng.standard_normal(tuple(n - r for n in shape)),
                               [U[:, r:] for U in Us])
    Y0 = random_tucker(shape, (r,) * 3, rng, xp=xp)
    out = {}
    for rel in (1e-2, 3e-2, 1e-1) if quick else (3e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        eps = rel * np.linalg.norm(T_r)
        T = xp.asarray(T_r + E_dir * (eps / np.linalg.norm(E_dir)))
        prob, Y, errs = TargetProblem(T), Y0, []
        W0 = Y0.to_tensor()
        for k in range(round(t_end / lr)):
            Y, _ = tdlrt_step(Y, prob.gradient(Y.to_tensor()), lr, 0.0, fixed_rank=True,
                              diagnostics=False)
            W = T + math.exp(-(k + 1) * lr) * (W0 - T)
            errs.append(fro(Y.to_tensor() - W))
        out[rel] = dict(eps=float(eps), errs=errs, ratio=errs[-1] / float(eps))
    return dict(lr=lr, curves=out)


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    lrs, errs = part_a(quick, rng, xp)
    b = part_b(quick, rng, xp)
    c = part_c(quick, rng, xp)
    checks = [Check(f"(a) {k}: |slope - 1| of error vs lr", abs(loglog_slope(lrs, v) - 1), 0.2)
              for k, v in errs.items()]
    checks += [
        Check("(b) every grid point: error / a-priori bound (Euler + t eps + t sqrt(d) theta/lr)",
              b["a_priori_ratio"], 1.0),
        Check("(b) U-shape: min(error at smallest, largest lr) / best error", b["u_depth"], 1.5,
              ">="),
    ]
    checks += [Check(f"(c) eps = {v['eps']:.3g}: |error(t_end) / eps - 1|", abs(v["ratio"] - 1),
                     0.1) for v in c["curves"].values()]
    details = dict(a=dict(lrs=lrs, errors=errs), b=b, c=c,
                   trace=errs["fixed rank"] + [v["errs"][-1] for v in c["curves"].values()],
                   notes=[f"(b) fitted constants c0, c2, c3 = {np.round(b['c'], 4).tolist()}, "
                          f"scaled by {b['scale']:.3g} to bound the fitting half; it bounds "
                          f"{100 * b['held_out_within']:.0f} % of the held-out half (largest "
                          f"error / fitted bound there: {b['held_out']:.3g}). Reported, not "
                          "checked: see the module docstring."])
    plots = [_plot(lrs, errs, b, c, out)]
    return ClaimResult.from_checks(NAME, CLAIM, checks, details, plots)


def _plot(lrs, errs, b, c, out):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    for k, v in errs.items():
        ax.loglog(lrs, v, "o-", label=f"{k} (slope {loglog_slope(lrs, v):.2f})")
    ax.loglog(lrs, [errs["fixed rank"][0] * lr / lrs[0] for lr in lrs], "k--", lw=1,
              label="slope 1")
    ax.set_xlabel("lr")
    ax.set_ylabel("relative error at t = 1")
    ax.set_title("(a) eps = 0, theta = 0: O(lr)")
    ax.legend(fontsize=7)
    ax = axes[1]
    cmap = plt.get_cmap("viridis")
    for i, tau in enumerate(b["taus"]):
        pts = [(g["lr"], g["err"], bd) for g, bd in zip(b["grid"], b["bound"]) if g["tau"] == tau]
        col = cmap(i / max(len(b["taus"]) - 1, 1))
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", color=col, label=f"tau={tau:g}")
        ax.loglog([p[0] for p in pts], [p[2] for p in pts], "--", color=col, lw=0.8)
    ax.set_xlabel("lr")
    ax.set_ylabel("error at t = 2")
    ax.set_title("(b) error (solid) and fitted bound (dashed)")
    ax.legend(fontsize=7)
    ax = axes[2]
    for v in c["curves"].values():
        t = c["lr"] * np.arange(1, len(v["errs"]) + 1)
        line, = ax.semilogy(t, v["errs"], label=f"eps = {v['eps']:.3g}")
        ax.axhline(v["eps"], color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("t")
    ax.set_ylabel("||W(t) - Y||")
    ax.set_title("(c) off the manifold: plateau at eps (dotted)")
    ax.legend(fontsize=7)
    return save(fig, out, "04_approximation.png")
