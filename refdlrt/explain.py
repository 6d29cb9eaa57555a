"""``refdlrt explain``: one TDLRT step, intermediate by intermediate, each with its invariant.

Runs Algorithm 1 (ALGORITHM.md §2) step by step with the named functions of
:mod:`refdlrt.dlrt.integrator` on a small problem and prints, in the order of the algorithm,
every intermediate (name, symbol, shape, norm) and the check that must hold there, with its
measured value, its bound and OK / NOT OK. Two problems:

* synthetic (default): L(W) = ½ ||W - T||_F² for a random target T (smoothness 1);
* ``layer=True``: a :class:`TuckerConv2d` layer (16 <- 6 channels, 5x5) fed a real minibatch of
  the embedded MNIST (through a fixed conv 6 x 5x5, ReLU, 2x2 max pool), with the regression
  loss L(W) = ||conv(x, W) - t||² / (2N) to a random teacher kernel's output t. The step uses
  the layer's projector: the layer gradient G is never formed (a check compares it with the
  dense route).

Modes count from 0 (mode 0 = C_out), ALGORITHM.md counts from 1. Float64 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backend import fro
from .dlrt.integrator import augment, k_step, lift, s_step, tdlrt_step, truncate
from .dlrt.problems import TargetProblem, random_tucker
from .dlrt.projector import DenseGradient
from .nn.lowrank_layers import TuckerConv2d
from .ops.activation import relu_forward
from .ops.conv import conv2d_forward, conv2d_weight_grad
from .ops.pooling import maxpool2d_forward
from .tensor.linalg import orthonormality_error
from .tensor.ranks import compatible_ranks
from .tensor.tucker import Tucker, multi_mode_product
from .tolerances import tolerance
from .training.datasets import load_embedded_mnist

__all__ = ["Row", "explain_step", "synthetic_problem", "layer_problem", "run_explain",
           "DEFAULT_SHAPES"]

TOL = tolerance(np.float64)
DEFAULT_SHAPES = {2: ((8, 6), (3, 3)), 3: ((6, 5, 4), (3, 3, 2)), 4: ((8, 6, 3, 3), (4, 3, 2, 2))}
LAYER_SHAPE, LAYER_RANKS = (16, 6, 5, 5), (8, 4, 3, 3)


@dataclass(frozen=True)
class Row:
    """One printed line: an intermediate and, where one holds there, its check."""

    step: str
    name: str
    shape: tuple | None = None
    norm: float | None = None
    check: str = ""
    value: float | None = None
    bound: float | None = None
    ok: bool | None = None

    def format(self) -> str:
        shape = "" if self.shape is None else "x".join(str(n) for n in self.shape)
        norm = "" if self.norm is None else f"{self.norm:.3e}"
        left = f"  {self.step:<10} {self.name:<42} {shape:<10} {norm:>10}"
        if not self.check:
            return left
        verdict = "OK" if self.ok else "NOT OK"
        value = "" if self.value is None else f"{self.value:.3e}"
        bound = "" if self.bound is None else f"{self.bound:.3e}"
        return f"{left}   {self.check:<36} {value:>10} {bound:>10}  {verdict}"


# --- problems ----------------------------------------------------------------------------


@dataclass
class Problem:
    """value(W), gradient(W) on dense W; ``projector(Y)`` the gradient the step is given."""

    description: str
    value: object
    gradient: object
    smoothness: float
    projector: object
    Y: Tucker


def synthetic_problem(shape, ranks, rng: np.random.Generator) -> Problem:
    """L(W) = ½ ||W - T||², T a random dense tensor of Y's norm; Y a random Tucker tensor."""
    Y = random_tucker(shape, ranks, rng)
    T = rng.standard_normal(shape)
    T *= fro(Y.to_tensor()) / fro(T)
    prob = TargetProblem(T)
    return Problem(
        description=f"L(W) = 1/2 ||W - T||_F^2, T a random {shape} tensor; smoothness L = 1",
        value=prob.value, gradient=prob.gradient, smoothness=1.0,
        projector=lambda Y: DenseGradient(prob.gradient(Y.to_tensor())), Y=Y,
    )


def layer_problem(rng: np.random.Generator, *, batch: int = 8, ranks=LAYER_RANKS) -> Problem:
    """A Tucker conv layer (16 <- 6, 5x5) on embedded MNIST features; regression to a teacher."""
    ds = load_embedded_mnist(n_train=batch, n_test=1, seed=int(rng.integers(2**31)))
    x0 = ds.x_train[:batch].astype(np.float64)  # N, 1, 28, 28
    w1 = rng.standard_normal((6, 1, 5, 5)) * math.sqrt(2 / 25)
    h, _ = conv2d_forward(x0, w1, None, padding=2)  # N, 6, 28, 28
    x, _ = maxpool2d_forward(relu_forward(h)[0], 2)  # N, 6, 14, 14
    w = rng.standard_normal(LAYER_SHAPE) * math.sqrt(2 / 150)
    teacher = rng.standard_normal(LAYER_SHAPE) * math.sqrt(2 / 150)
    t, _ = conv2d_forward(x, teacher, None)  # N, 16, 10, 10
    N = x.shape[0]

    def value(W):
        r = conv2d_forward(x, W, None)[0] - t
        return 0.5 * float((r * r).sum()) / N

    def gradient(W):
        return conv2d_weight_grad(x, (conv2d_forward(x, W, None)[0] - t) / N, W.shape[2:])

    def projector(Y):  # the layer's own route: forward, backward, then its projector
        layer = TuckerConv2d(Y)
        layer.projection_route = "blocks"  # reduced gradients only: G is never formed
        y = layer.forward(x)
        layer.backward((y - t) / N)
        return layer.projector()

    v = rng.standard_normal(LAYER_SHAPE)  # power iteration on A^T A, A: W -> conv(x, W) / sqrt(N)
    for _ in range(50):
        v = conv2d_weight_grad(x, conv2d_forward(x, v, None)[0], v.shape[2:]) / N
        v /= fro(v)
    smooth = fro(conv2d_weight_grad(x, conv2d_forward(x, v, None)[0], v.shape[2:]) / N) * 1.01
    Y = TuckerConv2d.from_dense(w, None, ranks).weight
    return Problem(
        description=(f"TuckerConv2d {LAYER_SHAPE} on {N} embedded MNIST images (features "
                     f"{tuple(x.shape)});\n         L(W) = ||conv(x, W) - t||^2 / (2N), t from a "
                     f"random teacher kernel; smoothness L ~ {smooth:.3g} (power iteration, +1 %)"),
        value=value, gradient=gradient, smoothness=smooth, projector=projector, Y=Y,
    )


# --- the step, explained -----------------------------------------------------------------


def _le_row(step, name, shape, norm, check, value, bound) -> Row:
    """A row whose check is ``value <= bound``."""
    return Row(step, name, shape, norm, check, value, bound, bool(value <= bound))


def _orthonormal_row(step, name, U) -> Row:
    """A basis and its check ||U^T U - I||_F <= ortho sqrt(n)."""
    return _le_row(step, name, U.shape, None, "||U^T U - I||_F", orthonormality_error(U),
                   TOL.ortho * math.sqrt(U.shape[0]))


def _k_steps(Y, grad, lr, nY, nG):
    """Steps 1-3 for every mode: (K_i, grad_K_i) and the rows."""
    Ks, gKs, rows = [], [], []
    for i in range(Y.ndim):
        K, gK = k_step(Y.core, Y.factors, i, grad, lr)
        K0 = K + lr * gK  # K_i before the step, U_i R_i^T
        Ks.append(K)
        gKs.append(gK)
        rows += [
            _le_row("1 k_step", f"K_{i} = U_{i} R_{i}^T (before)", K0.shape, fro(K0),
                    "| ||K_i|| - ||Y|| | (Mat_i Y = K V^T)", abs(fro(K0) - nY), TOL.rtol * nY),
            _le_row("2 k_step", f"grad_K_{i} = Mat_{i}(G x_j U_j^T) Q_{i}", gK.shape, fro(gK),
                    "||grad_K_i|| <= ||G||", fro(gK), nG * (1 + TOL.rtol)),
            Row("3 k_step", f"K_{i} <- K_{i} - lr grad_K_{i}", K.shape, fro(K)),
        ]
    return Ks, gKs, rows


def _augmentations(Ks, gKs, U):
    """Steps 4-5 for every mode: (U^_i, M^_i) and the rows."""
    U_hat, M_hat, rows = [], [], []
    for i, (K, gK, Ui) in enumerate(zip(Ks, gKs, U)):
        Uh, Mh = augment(K, Ui, direction=gK)
        U_hat.append(Uh)
        M_hat.append(Mh)
        n, r = Ui.shape
        rows += [
            _orthonormal_row("4 augment", f"U^_{i} = orth[U_{i} | grad_K_{i}]", Uh),
            _le_row("4 augment", f"  width r^_{i} <= min(2 r_{i}, n_{i})", None, None, "r^_i",
                    float(Uh.shape[1]), float(min(2 * r, n))),
            _le_row("4 augment", "  range(U^) contains range(U)", None, None,
                    "||U_i - U^_i M^_i||_F", fro(Ui - Uh @ Mh), TOL.rtol * math.sqrt(r)),
            _le_row("4 augment", "  range(U^) contains range(K)", None, None,
                    "||K_i - U^ U^^T K_i||_F", fro(K - Uh @ (Uh.T @ K)), TOL.rtol * max(fro(K), 1e-300)),
            Row("5 augment", f"M^_{i} = U^_{i}^T U_{i}", Mh.shape, fro(Mh)),
        ]
    return U_hat, M_hat, rows


def _s_step_rows(grad_C, C_tilde, U, U_hat, grad, G, dense_check):
    """Step 7's rows: the augmented gradient at least the old one, the projector route."""
    old = fro(grad.project(list(U)))
    rows = [Row("7 s_step", "grad_C^ = G x_i U^_i^T", grad_C.shape, fro(grad_C),
                "||grad_C^|| >= ||G x_i U_i^T||", fro(grad_C), old * (1 - TOL.rtol),
                bool(fro(grad_C) >= old * (1 - TOL.rtol)))]
    if dense_check:
        rows.append(_le_row("7 s_step", "  projector route (G never formed)", None, None,
                            "||proj - dense G x_i U^_i^T||",
                            fro(grad_C - multi_mode_product(G, U_hat, transpose=True)),
                            TOL.rtol * fro(grad_C)))
    return rows + [Row("7 s_step", "C~ = C^ - lr grad_C^", C_tilde.shape, fro(C_tilde))]


def _truncation_rows(Y_new, info, eta, tau, d):
    """Steps 8-9's rows: per-mode tails against theta, eta <= bound <= sqrt(d) theta, new bases."""
    theta, rows = float(info.theta), []
    for i in range(d):
        s = np.asarray(info.singular_values[i])
        rows.append(_le_row("8 truncate", f"sigma_{i}: singular values of Mat_{i}(C~)", s.shape, None,
                            f"tail at r_{i}' = {info.ranks[i]} <= theta", float(info.tails[i]),
                            theta * (1 + TOL.rtol)))
        rows.append(Row("", "  " + ", ".join(f"{v:.2e}" for v in s[:4]) + (", ..." if len(s) > 4 else "")))
    rows += [
        Row("8 truncate", f"theta = tau ||C~||_F (tau = {tau:g})", None, theta),
        _le_row("8 truncate", "eta = ||Y~ - Y_new||_F", None, eta, "eta <= HOSVD bound", eta,
                float(info.bound) * (1 + TOL.rtol) + TOL.atol),
        _le_row("8 truncate", "HOSVD bound (sum of tails^2)^1/2", None, float(info.bound),
                "bound <= sqrt(d) theta", float(info.bound), math.sqrt(d) * theta * (1 + TOL.rtol)),
    ]
    rows += [_orthonormal_row("9 truncate", f"U_{i}' = U^_{i} P_{i}[:, :r_{i}']", Ui)
             for i, Ui in enumerate(Y_new.factors)]
    return rows + [Row("9 truncate", f"C' = C~ x_i P_i^T, ranks r' = {Y_new.ranks}", Y_new.core.shape,
                       fro(Y_new.core), "ranks compatible (r_i <= prod r_j)", None, None,
                       compatible_ranks(Y_new.ranks) == tuple(Y_new.ranks))]


def explain_step(prob: Problem, lr: float, tau: float, *, dense_check: bool = False) -> list:
    """Run one rank-adaptive step with the named functions and return the rows to print."""
    Y, d = prob.Y, prob.Y.ndim
    Yd = Y.to_tensor()
    nY = fro(Yd)
    grad = prob.projector(Y)
    G = prob.gradient(Yd)  # dense, for the checks only
    L0 = prob.value(Yd)
    rows = [Row("input", "core C", Y.core.shape, fro(Y.core))]
    rows += [_orthonormal_row("input", f"basis U_{i}", Ui) for i, Ui in enumerate(Y.factors)]
    rows += [Row("input", "Y = C x_i U_i", Yd.shape, nY), Row("input", f"loss L(Y) = {L0:.6g}"),
             Row("input", "G = grad L(Y) (check only)", G.shape, fro(G))]

    Ks, gKs, more = _k_steps(Y, grad, lr, nY, fro(G))  # steps 1-3, all from the same G
    rows += more
    U_hat, M_hat, more = _augmentations(Ks, gKs, Y.factors)  # steps 4-5
    rows += more
    C_hat = lift(Y.core, M_hat)  # step 6
    rows.append(_le_row("6 lift", "C^ = C x_i M^_i", C_hat.shape, fro(C_hat),
                        "||C^ x_i U^_i - Y||_F (lift exact)",
                        fro(multi_mode_product(C_hat, U_hat) - Yd), TOL.rtol * nY))
    C_tilde, grad_C = s_step(C_hat, U_hat, grad, lr)  # step 7
    rows += _s_step_rows(grad_C, C_tilde, Y.factors, U_hat, grad, G, dense_check)
    Y_new, info, eta = truncate(C_tilde, U_hat, tau, r_min=1, r_max=None)  # steps 8-9
    rows += _truncation_rows(Y_new, info, eta, tau, d)

    # the result: descent (ALGORITHM.md §4), and the same tensor as the library's step
    L1, Ls = prob.value(Y_new.to_tensor()), prob.smoothness
    bound = (L0 - lr * (1 - Ls * lr / 2) * fro(grad_C) ** 2
             + fro(prob.gradient(multi_mode_product(C_tilde, U_hat))) * eta + Ls / 2 * eta**2)
    rows.append(_le_row("result", f"loss L(Y_new) = {L1:.6g} (was {L0:.6g})", None, None,
                        "L(Y_new) <= descent bound (§4)", L1, bound + TOL.rtol * max(abs(L0), 1.0)))
    Y_lib, _ = tdlrt_step(Y, prob.projector(Y), lr, tau)
    diff = fro(Y_lib.to_tensor() - Y_new.to_tensor())
    rows.append(Row("result", "this walk == tdlrt_step", None, None,
                    "||Y_new - tdlrt_step(Y)||_F", diff, 0.0, diff == 0.0 and Y_lib.ranks == Y_new.ranks))
    return rows


def _check_shape_ranks(shape, ranks):
    if len(shape) != len(ranks):
        raise ValueError(f"--ranks: expected {len(shape)} ranks (one per mode of --shape {shape}), "
                         f"got {len(ranks)}")
    if len(shape) < 2:
        raise ValueError(f"--shape: expected a tensor of order d >= 2, got {shape}")
    for i, (r, n) in enumerate(zip(ranks, shape)):
        if not 1 <= r <= n:
            raise ValueError(f"--ranks: mode {i}: expected 1 <= r <= n = {n}, got {r}")
    if compatible_ranks(ranks) != tuple(ranks):
        raise ValueError(f"--ranks: expected compatible ranks r_i <= prod_(j!=i) r_j, got {ranks} "
                         f"(e.g. {compatible_ranks(ranks)})")


def run_explain(*, order: int = 3, shape=None, ranks=None, tau: float = 0.1, lr=None,
                seed: int = 0, layer: bool = False, out=print) -> int:
    """Print the explained step; return 0 if every check is OK, 1 otherwise."""
    if order not in DEFAULT_SHAPES and shape is None:
        raise ValueError(f"--order: expected 2, 3 or 4 (or give --shape), got {order}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau >= 0):
        raise ValueError(f"--tau: expected a finite number >= 0, got {tau}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr: expected a finite number > 0, got {lr}")
    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    if layer:
        if shape is not None:
            raise ValueError(f"--shape: the layer is {LAYER_SHAPE}; give --ranks only with --layer")
        ranks = tuple(ranks) if ranks is not None else LAYER_RANKS
        _check_shape_ranks(LAYER_SHAPE, ranks)
        prob = layer_problem(rng, ranks=ranks)
    else:
        d_shape, d_ranks = DEFAULT_SHAPES.get(order, (None, None))
        shape = tuple(shape) if shape is not None else d_shape
        if ranks is None:
            ranks = d_ranks if shape == d_shape else compatible_ranks([max(1, n // 2) for n in shape])
        _check_shape_ranks(shape, tuple(ranks))
        prob = synthetic_problem(shape, tuple(ranks), rng)
    lr = 0.5 / prob.smoothness if lr is None else float(lr)
    rows = explain_step(prob, lr, tau, dense_check=layer)
    Y = prob.Y
    out("refdlrt explain: one rank-adaptive TDLRT step (ALGORITHM.md §2, Algorithm 1; "
        "modes count from 0 here)")
    out(f"problem: {prob.description}")
    out(f"Y: shape {Y.shape}, ranks {Y.ranks}; lr = {lr:g}, tau = {tau:g}, seed {seed}, float64")
    out("")
    out(f"  {'step':<10} {'quantity':<42} {'shape':<10} {'norm':>10}   {'check':<36} "
        f"{'value':>10} {'bound':>10}  verdict")
    out("  " + "-" * 140)
    for row in rows:
        out(row.format())
    checks = [r for r in rows if r.check]
    bad = [r for r in checks if not r.ok]
    out("")
    out(f"{len(checks) - len(bad)} of {len(checks)} checks OK" if not bad else
        f"{len(bad)} of {len(checks)} checks NOT OK: " + "; ".join(f"{r.step}: {r.check}" for r in bad))
    return 0 if not bad else 1

