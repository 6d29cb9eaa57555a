"""Claim 3: every TDLRT step satisfies the descent inequality of ALGORITHM.md §4.

Claim: with Ỹ = Ĉ x_i Û_i after the S-step and η = ||Ỹ - Y_new||,

    L(Y_new) <= L(Y) - λ(1 - Lλ/2) ||grad_Ĉ L||² + ||grad L(Ỹ)|| η + (L/2) η²,

and ||grad_Ĉ L|| >= ||G x_i U_i^T|| (the augmented Galerkin space contains the old one).

Measured at every step: on random quadratics (d = 2, 3, 4, known L = ||A||², λ <= 1/L, several
τ) and on a softmax-regression network on embedded-MNIST images, full batch, whose weight
(10 x 784) is a Tucker d = 2 tensor; for the mean cross-entropy L <= ||X||_2² / (2N) holds
rigorously (the softmax Hessian has eigenvalues <= 1/2), so the inequality is checked with a
true smoothness constant there too. Ỹ is the same step with τ = 0; η is recomputed densely.
Also checked: the S-step moved Y by exactly λ ||grad_Ĉ L|| (||Ỹ - Y|| = λ ||grad_Ĉ L||).

A ReLU network (784 -> 32 -> 10, middle weight Tucker d = 2, last layer fixed) is not
L-smooth (ReLU kinks), so no inequality with a known L applies; for it the weaker claim is
checked: with a small λ and τ = 0 the full-batch loss decreases at every step.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from ..dlrt.integrator import tdlrt_step
from ..dlrt.problems import random_quadratic, random_tucker
from ..ops.activation import relu_backward, relu_forward
from ..ops.linear import linear_backward, linear_forward
from ..ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from ..tensor.tucker import multi_mode_product
from ..training.datasets import load_embedded_mnist
from . import Check, ClaimResult
from ._common import TOL, fro, pyplot, save

NAME = "descent"
CLAIM = ("Every step satisfies L(Y_new) <= L(Y) - lr(1 - L lr/2)||grad_C L||^2 + ||grad L(Y~)|| eta "
         "+ (L/2) eta^2 and ||grad_C L|| >= ||G x_i U_i^T|| (quadratics with known L, softmax "
         "regression with L <= ||X||^2/(2N)); a ReLU net's full-batch loss decreases monotonically "
         "for small lr.")


class SoftmaxRegression:
    """Mean cross-entropy of softmax(X W^T) with labels y; L <= ||X||_2² / (2N)."""

    def __init__(self, X, y):
        self.X, self.y = X, y
        N = X.shape[0]
        self.smoothness = float(np.linalg.norm(to_numpy(X), 2) ** 2 / (2 * N))
        self.shape = (10, X.shape[1])

    def value(self, W) -> float:
        logits, _ = linear_forward(self.X, W)
        return float(softmax_cross_entropy(logits, self.y)[0])

    def gradient(self, W):
        logits, cache = linear_forward(self.X, W)
        _, lcache = softmax_cross_entropy(logits, self.y)
        return linear_backward(softmax_cross_entropy_backward(lcache), cache)[1]  # 10, 784


class ReluNet:
    """x -> relu(x W^T) W2^T -> cross-entropy; W (hidden x 784) trained, W2 fixed."""

    def __init__(self, X, y, W2):
        self.X, self.y, self.W2 = X, y, W2

    def value(self, W) -> float:
        h, _ = linear_forward(self.X, W)
        a, _ = relu_forward(h)
        logits, _ = linear_forward(a, self.W2)
        return float(softmax_cross_entropy(logits, self.y)[0])

    def gradient(self, W):
        h, c1 = linear_forward(self.X, W)
        a, cr = relu_forward(h)
        logits, c2 = linear_forward(a, self.W2)
        _, cl = softmax_cross_entropy(logits, self.y)
        da = linear_backward(softmax_cross_entropy_backward(cl), c2)[0]
        return linear_backward(relu_backward(da, cr), c1)[1]  # hidden, 784


def descent_run(prob, Y, lr, tau, steps, L):
    """Run ``steps`` TDLRT steps; per step return the quantities of the inequality."""
    rows = []
    for _ in range(steps):
        W = Y.to_tensor()
        G = prob.gradient(W)
        Y_tilde, _ = tdlrt_step(Y, G, lr, 0.0)
        Y_new, info = tdlrt_step(Y, G, lr, tau)
        Wt = Y_tilde.to_tensor()
        eta = fro(Wt - Y_new.to_tensor())
        g_hat = info.grad_core_norm
        loss, new = prob.value(W), prob.value(Y_new.to_tensor())
        rhs = loss - lr * (1 - L * lr / 2) * g_hat**2 + fro(prob.gradient(Wt)) * eta + L / 2 * eta**2
        rows.append(dict(
            loss=loss, new=new, rhs=rhs, guaranteed=loss - rhs, actual=loss - new,
            g_hat=g_hat, g_old=fro(multi_mode_product(G, Y.factors, transpose=True)),
            move_err=abs(fro(Wt - W) - lr * g_hat), scale=max(fro(Y.core), 1.0),
        ))
        Y = Y_new
    return rows


def _quadratic_rows(quick, rng, xp):
    rows, trace = [], None
    shapes = ((8, 6), (5, 4, 4), (4, 3, 3, 3))
    for shape in shapes:
        for frac in (0.25, 0.6, 1.0):
            for tau in (0.0, 0.05, 0.2):
                prob = random_quadratic(shape, rng, L=2.0, xp=xp)
                Y = random_tucker(shape, tuple(max(1, n // 2) for n in shape), rng, xp=xp)
                r = descent_run(prob, Y, frac / prob.smoothness, tau, 6 if quick else 30,
                                prob.smoothness)
                trace = trace or [x["new"] for x in r]
                rows += r
    return rows, trace


def _mnist(n, xp):
    ds = load_embedded_mnist(n_train=n, n_test=1)
    X = ds.x_train.reshape(n, -1).astype(np.float64)  # N, 784
    return xp.asarray(X), xp.asarray(ds.y_train)


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    rng = np.random.default_rng(seed)
    quad, trace = _quadratic_rows(quick, rng, xp)
    X, y = _mnist(256 if quick else 1000, xp)
    soft = SoftmaxRegression(X, y)
    sm_rows = []
    for frac, tau in ((0.5, 0.0), (1.0, 0.0), (1.0, 0.1)):
        Y = random_tucker(soft.shape, (3, 3), rng, xp=xp, core_scale=0.1)
        sm_rows += descent_run(soft, Y, frac / soft.smoothness, tau, 10 if quick else 60,
                               soft.smoothness)
    net = ReluNet(X, y, xp.asarray(rng.standard_normal((10, 32)) / np.sqrt(32)))
    Y = random_tucker((32, 784), (8, 8), rng, xp=xp, core_scale=1.0)
    net_losses = [net.value(Y.to_tensor())]
    for _ in range(15 if quick else 100):
        Y, _ = tdlrt_step(Y, net.gradient(Y.to_tensor()), 0.05, 0.0, diagnostics=False)
        net_losses.append(net.value(Y.to_tensor()))

    def ratio(rows):
        return max(r["new"] / (r["rhs"] + TOL.rtol * max(r["loss"], 1.0)) for r in rows)

    allr = quad + sm_rows
    checks = [
        Check(f"quadratics, {len(quad)} steps: max L(Y_new) / descent bound", ratio(quad), 1.0),
        Check(f"softmax regression, {len(sm_rows)} steps: max L(Y_new) / descent bound",
              ratio(sm_rows), 1.0),
        Check("min ||grad_C L|| / ||G x_i U_i^T||", min(r["g_hat"] / r["g_old"] for r in allr
                                                      if r["g_old"] > 0), 1 - TOL.rtol, ">="),
        Check("S-step moves Y by lr ||grad_C L||: max | ||Y~ - Y|| - lr||grad_C L|| | / ||Y||",
              max(r["move_err"] / r["scale"] for r in allr), TOL.rtol),
        Check(f"ReLU net, lr = 0.05, {len(net_losses) - 1} steps: max L(Y_k+1) / L(Y_k)",
              max(b / a for a, b in zip(net_losses, net_losses[1:])), 1.0),
    ]
    details = dict(trace=trace, softmax_L=soft.smoothness, net_losses=net_losses,
                   notes=["ReLU net: no smoothness constant exists (kinks), so only monotone "
                          "decrease at a small lr is claimed for it."])
    return ClaimResult.from_checks(NAME, CLAIM, checks, details,
                                   [_plot(quad, sm_rows, net_losses, out)])


def _plot(quad, sm, net_losses, out):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    for rows, lab, mk in ((quad, "quadratics", "."), (sm, "softmax regression", "x")):
        ax.plot([r["guaranteed"] for r in rows], [r["actual"] for r in rows], mk, ms=4, label=lab)
    allv = [v for r in quad + sm for v in (r["guaranteed"], r["actual"])]
    lo, hi = min(allv), max(allv)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="actual = guaranteed")
    ax.set_xscale("symlog", linthresh=1e-6)
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_xlabel("guaranteed decrease  L(Y) - bound")
    ax.set_ylabel("actual decrease  L(Y) - L(Y_new)")
    ax.set_title("every point on or above the diagonal")
    ax.legend(fontsize=7)
    axes[1].plot(net_losses, "o-", ms=3)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("full-batch loss")
    axes[1].set_title("ReLU net (Tucker middle weight), lr = 0.05, tau = 0")
    return save(fig, out, "03_descent.png")
