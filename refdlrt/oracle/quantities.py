"""What is compared, per case kind, in the order of the algorithm: basis-independent quantities.

QR/SVD signs and bases are not unique: two correct implementations return factors that differ
by signs or rotations (U_i Q with Q orthogonal; the core rotated to match). So a raw factor,
K_i or core is never compared. Compared instead, each computed on the golden side and on the
candidate side from that side's own arrays:

* dense tensors (Y = C x_i U_i, Ĉ x_i Û_i, G x_i Û_i^T ... x_i Û_i, layer outputs);
* orthogonal projectors U U^T (the span of a basis);
* Gram matrices K K^T (K_i = U_i R_i^T is fixed up to K_i -> K_i Q by the QR of the core);
* singular values, ranks, losses, the tolerance ϑ.

Each quantity has a tolerance class; the tolerance depends on the lower of the two precisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Quantity", "quantities", "TOLERANCES"]

# relative (Frobenius) tolerance per class and precision; "exact" is equality
TOLERANCES = {
    "exact": {"float64": 0.0, "float32": 0.0},
    # one op (conv, matmul chain): rounding of sums of O(1e3) terms
    "op": {"float64": 1e-10, "float32": 1e-4},
    # through QR/SVD of a step: conditioning of small SVDs enters
    "step": {"float64": 1e-8, "float32": 1e-3},
    # spans: ||P_c - P_g||_F / sqrt(r), absolute (projectors have norm sqrt(r))
    "span": {"float64": 1e-8, "float32": 1e-3},
    # three training steps of a network
    "train": {"float64": 1e-7, "float32": 1e-2},
}


@dataclass(frozen=True)
class Quantity:
    """One compared quantity: its label, the algorithm step it belongs to, the arrays it is
    made of, how it is formed from them, how it is compared, and its tolerance class."""

    label: str
    step: str
    arrays: tuple
    form: object  # callable(dict of arrays) -> np.ndarray
    compare: str  # "rel" | "span" | "exact"
    tol: str


def _dense(core, factors):
    out = np.asarray(core, dtype=np.float64)
    for i, U in enumerate(factors):
        out = np.moveaxis(np.tensordot(np.asarray(U, dtype=np.float64), out, axes=([1], [i])), 0, i)
    return out


def _proj(U):
    U = np.asarray(U, dtype=np.float64)
    return U @ U.T


def _gram(K):
    K = np.asarray(K, dtype=np.float64)
    return K @ K.T


def _q(label, step, arrays, form, compare="rel", tol="step"):
    return Quantity(label, step, tuple(arrays), form, compare, tol)


def _arr(name):
    return lambda a: np.asarray(a[name], dtype=np.float64)


def _conv(params, arrays_present):
    qs = [_q("forward y", "forward", ["y"], _arr("y"), tol="op"),
          _q("input gradient dx", "backward", ["dx"], _arr("dx"), tol="op"),
          _q("kernel gradient dw", "backward", ["dw"], _arr("dw"), tol="op")]
    if "db" in arrays_present:
        qs.append(_q("bias gradient db", "backward", ["db"], _arr("db"), tol="op"))
    return qs


def _hosvd(d):
    qs = [_q(f"singular values of mode {i}", "truncation", [f"sigma_{i}"], _arr(f"sigma_{i}"))
          for i in range(d)]
    qs.append(_q("ranks", "truncation", ["ranks"], _arr("ranks"), "exact", "exact"))
    U = [f"U_{i}" for i in range(d)]
    qs.append(_q("truncated tensor C x_i U_i", "truncation", ["core"] + U,
                 lambda a: _dense(a["core"], [a[u] for u in U])))
    qs += [_q(f"span of U_{i}", "truncation", [f"U_{i}"], lambda a, i=i: _proj(a[f"U_{i}"]), "span", "span")
           for i in range(d)]
    return qs


def _step(d, params):
    fixed, mu = bool(params.get("fixed_rank")), float(params.get("momentum", 0.0))
    Uh = [f"U_hat_{i}" for i in range(d)]
    Un = [f"U_new_{i}" for i in range(d)]
    qs = []
    for i in range(d):
        qs.append(_q(f"K-gradient of mode {i} (Gram)", f"K-step of mode {i}", [f"grad_K_{i}"],
                     lambda a, i=i: _gram(a[f"grad_K_{i}"])))
        qs.append(_q(f"K_{i} after the K-step (Gram)", f"K-step of mode {i}", [f"K_{i}"],
                     lambda a, i=i: _gram(a[f"K_{i}"])))
    for i in range(d):
        qs.append(_q(f"{'basis' if fixed else 'augmented span'} of mode {i}",
                     f"{'K-step basis' if fixed else 'augmentation'} of mode {i}", [Uh[i]],
                     lambda a, i=i: _proj(a[Uh[i]]), "span", "span"))
    qs.append(_q("lifted tensor C^ x_i U^_i", "lift", ["C_hat"] + Uh,
                 lambda a: _dense(a["C_hat"], [a[u] for u in Uh])))
    qs.append(_q("projected gradient grad_C^ x_i U^_i", "S-step", ["grad_C_hat"] + Uh,
                 lambda a: _dense(a["grad_C_hat"], [a[u] for u in Uh])))
    qs.append(_q("C~ x_i U^_i after the S-step", "S-step", ["C_tilde"] + Uh,
                 lambda a: _dense(a["C_tilde"], [a[u] for u in Uh])))
    if not fixed:
        qs.append(_q("truncation tolerance theta", "truncation", ["theta"], _arr("theta")))
        qs += [_q(f"singular values of Mat_{i}(C~)", "truncation", [f"sigma_{i}"], _arr(f"sigma_{i}"))
               for i in range(d)]
    qs.append(_q("new ranks", "truncation", ["ranks"], _arr("ranks"), "exact", "exact"))
    qs.append(_q("new tensor C' x_i U_i'", "truncation", ["C_new"] + Un,
                 lambda a: _dense(a["C_new"], [a[u] for u in Un])))
    qs += [_q(f"new span of mode {i}", "truncation", [Un[i]], lambda a, i=i: _proj(a[Un[i]]), "span", "span")
           for i in range(d)]
    if mu:
        qs.append(_q("new velocity v' x_i U_i'", "momentum transport", ["v_new"] + Un,
                     lambda a: _dense(a["v_new"], [a[u] for u in Un])))
    return qs


def _layer(d, arrays_present):
    qs = [_q("forward y", "forward", ["y"], _arr("y"), tol="op"),
          _q("input gradient dx", "backward", ["dx"], _arr("dx"), tol="op")]
    if "db" in arrays_present:
        qs.append(_q("bias gradient db", "backward", ["db"], _arr("db"), tol="op"))
    qs += [_q(f"K-step projection G x_(j!=i) U_j^T, i = {i}", "projector", [f"G_K_{i}"],
              _arr(f"G_K_{i}"), tol="op") for i in range(d)]
    qs.append(_q("S-step projection G x_i A_i^T", "projector", ["G_C"], _arr("G_C"), tol="op"))
    return qs


LENET_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
LENET_LOWRANK = ("conv2", "fc1", "fc2")


def _lenet(params):
    qs = []
    for s in range(int(params["steps"])):
        qs.append(_q(f"loss before step {s}", f"training step {s}", [f"loss_{s}"], _arr(f"loss_{s}"), tol="train"))
        qs += [_q(f"ranks of {n} after step {s}", f"training step {s}", [f"ranks_{n}_{s}"],
                  _arr(f"ranks_{n}_{s}"), "exact", "exact") for n in LENET_LOWRANK]
        for n in LENET_LAYERS:
            qs.append(_q(f"weight of {n} after step {s}", f"training step {s}", [f"W_{n}_{s}"],
                         _arr(f"W_{n}_{s}"), tol="train"))
            qs.append(_q(f"bias of {n} after step {s}", f"training step {s}", [f"b_{n}_{s}"],
                         _arr(f"b_{n}_{s}"), tol="train"))
    return qs


def quantities(kind: str, params: dict, golden_outputs: dict, d: int) -> list:
    """The compared quantities of a case, in the order of the algorithm."""
    if kind == "conv2d":
        return _conv(params, golden_outputs)
    if kind == "hosvd":
        return _hosvd(d)
    if kind == "tdlrt_step":
        return _step(d, params)
    if kind == "tucker_conv2d":
        return _layer(4, golden_outputs)
    if kind in ("lowrank_linear", "matrix_conv2d"):
        return _layer(2, golden_outputs)
    if kind == "lenet5_steps":
        return _lenet(params)
    raise ValueError(f"unknown case kind {kind!r}")
