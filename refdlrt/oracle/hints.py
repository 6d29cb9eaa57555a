"""Hints for the first differing quantity: where it matches a bug class public DLRT codes have
shipped, name it. Each hint is tried only when its signature is seen in the candidate's arrays.
"""

from __future__ import annotations

import re

import numpy as np

from ..tensor.hosvd import tail_norms

__all__ = ["hint_for", "HINTS"]

HINTS = {
    "k_gradient_no_q": "K-step: the K-gradient lacks Q_i: it is the U-gradient Mat_i(G x_(j!=i) U_j^T) "
                       "Mat_i(C)^T; the K-gradient is Mat_i(G x_(j!=i) U_j^T) Q_i with Mat_i(C)^T = Q_i R_i",
    "k_gradient": "K-step: the K-gradient is Mat_i(G x_(j!=i) U_j^T) Q_i, Mat_i the C-order unfolding "
                  "moveaxis(T, i, 0).reshape(n_i, -1) and Q_i from the QR Mat_i(C)^T = Q_i R_i: look for a "
                  "wrong unfolding or a missing Q_i",
    "k_step": "K-step: K_i = U_i R_i^T - lr grad_K_i with R_i from the QR Mat_i(C)^T = Q_i R_i",
    "augmentation_old_basis": "augmentation without the old basis: range(U^_i) must contain range(U_i); "
                              "build U^_i from [K_i | U_i] (or [U_i | grad_K_i])",
    "augmentation": "augmentation: U^_i is an orthonormal basis of range([K_i | U_i]) of its numerical "
                    "rank (SVD cut-off max(n, m) eps sigma_max)",
    "no_lift": "core not lifted: C^ is C zero-padded; the lift is C^ = C x_i M^_i with M^_i = U^_i^T U_i",
    "lift": "lift: C^ = C x_i M^_i (M^_i = U^_i^T U_i) must reproduce Y exactly",
    "s_step": "S-step: grad_C^ = G x_i U^_i^T at the same point Y (with momentum along D = G + mu V), "
              "C~ = C^ - lr grad_C^",
    "theta_absolute": "truncation tolerance is absolute: theta = tau ||C~||_F is relative to the core",
    "theta_before_s_step": "truncation tolerance computed from the core before the S-step: theta = "
                           "tau ||C~||_F uses the core after the S-step",
    "theta": "truncation tolerance: theta = tau ||C~||_F, C~ the core after the S-step",
    "tails_unfolding": "per-mode tails from the wrong unfolding: sigma_i are the singular values of "
                       "Mat_i(C~) (mode i, C order)",
    "threshold": "'<' vs '<=' at the threshold: r_i' is the smallest r with (sum_(j>r) sigma_j^2)^(1/2) "
                 "<= theta; this case has a tail exactly equal to theta",
    "rank_rule": "rank rule: r_i' = smallest r with (sum_(j>r) sigma_j^2)^(1/2) <= theta, clamped to "
                 "[r_min, r_max] and then made compatible (r_i <= prod_(j!=i) r_j)",
    "truncation_vectors": "truncation used the wrong singular vectors: U_i' = U^_i P_i[:, :r_i'] with P_i "
                          "the left singular vectors (columns) of Mat_i(C~); not the right ones, not rows",
    "momentum_transport": "momentum buffer not transported with the re-basing: v' = grad_C^ x_i P_i^T "
                          "with P_i = U^_i^T U_i'; a velocity kept on re-based factors is stale",
    "bias_twice": "bias added twice in the factorised layer (inside the core conv and after): add b "
                  "once, in the last stage",
    "forward": "forward: y = U_0 conv(U_1^T x, C x_2 U_2 x_3 U_3) + b (Tucker conv) or x W^T + b",
    "projector": "projector: G x_(j!=i) U_j^T and G x_i A_i^T of the kernel gradient G at the last forward",
    "training": "a training step differs: check the single-step cases (tdlrt_step, layers) first",
}


def _f(a):
    return np.asarray(a, dtype=np.float64)


def _unfold(T, i):
    return np.moveaxis(T, i, 0).reshape(T.shape[i], -1)


def _close(a, b, rtol=1e-6):
    a, b = _f(a), _f(b)
    return a.shape == b.shape and np.linalg.norm(a - b) <= rtol * max(np.linalg.norm(b), 1e-300)


def _step_hint(label, g, c, params):
    d = sum(1 for k in g if k.startswith("U_hat_"))
    m = re.search(r"(?:mode |Mat_)(\d+)", label)
    mode = int(m.group(1)) if m else None
    if label.startswith("K-gradient"):
        C, U = _f(g["C"]), [_f(g[f"U_{j}"]) for j in range(d)]
        D = _f(g["G"])
        for j, Uj in enumerate(U):
            if j != mode:
                D = np.moveaxis(np.tensordot(Uj.T, D, axes=([1], [j])), 0, j)
        u_grad = _unfold(D, mode) @ _unfold(C, mode).T
        cg = _f(c[f"grad_K_{mode}"])
        if not float(params.get("momentum", 0)) and cg.shape == u_grad.shape and _close(cg @ cg.T, u_grad @ u_grad.T):
            return HINTS["k_gradient_no_q"]
        return HINTS["k_gradient"]
    if label.startswith("K_"):
        return HINTS["k_step"]
    if label.startswith(("augmented span", "basis of mode")):
        U, Uc = _f(g[f"U_{mode}"]), _f(c[f"U_hat_{mode}"])
        if Uc.ndim == 2 and Uc.shape[0] == U.shape[0]:
            if np.linalg.norm(U - Uc @ (Uc.T @ U)) > 1e-6 * np.sqrt(U.shape[1]):
                return HINTS["augmentation_old_basis"]
        return HINTS["augmentation"]
    if label.startswith("lifted"):
        C, Ch = _f(g["C"]), _f(c["C_hat"])
        if Ch.ndim == C.ndim and all(a >= b for a, b in zip(Ch.shape, C.shape)):
            pad = np.zeros_like(Ch)
            pad[tuple(slice(0, n) for n in C.shape)] = C
            if _close(Ch, pad, 1e-9):
                return HINTS["no_lift"]
        return HINTS["lift"]
    if label.startswith(("projected gradient", "C~")):
        return HINTS["s_step"]
    if label.startswith("truncation tolerance"):
        th, tau = float(_f(c["theta"])), float(params["tau"])
        if abs(th - tau) <= 1e-6 * max(tau, 1e-300):
            return HINTS["theta_absolute"]
        if abs(th - tau * np.linalg.norm(_f(g["C"]))) <= 1e-6 * abs(th):  # ||C^|| = ||C|| = ||Y||
            return HINTS["theta_before_s_step"]
        return HINTS["theta"]
    if label.startswith("singular values"):
        return _tails_hint(mode, g, c, d)
    if label == "new ranks":
        return _rank_hint(g, d, float(_f(g["theta"])))
    if label.startswith(("new tensor", "new span")):
        return HINTS["truncation_vectors"]
    if label.startswith("new velocity"):
        return HINTS["momentum_transport"]
    return None


def _tails_hint(mode, g, c, d):
    cs = _f(c[f"sigma_{mode}"])
    for j in range(d):
        gj = _f(g[f"sigma_{j}"])
        k = min(len(gj), len(cs))
        if j != mode and k and np.allclose(cs[:k], gj[:k], rtol=1e-6, atol=1e-12 * max(gj[0], 1e-300)):
            return HINTS["tails_unfolding"]
    return HINTS["rank_rule"]


def _rank_hint(g, d, theta):
    ranks = _f(g["ranks"]).astype(int)
    for i in range(d):
        t = tail_norms(_f(g[f"sigma_{i}"]))
        r = int(ranks[i])
        if r < len(t) and abs(t[r] - theta) <= 1e-12 * max(theta, 1e-300):
            return HINTS["threshold"]
    return HINTS["rank_rule"]


def _hosvd_hint(label, g, c, params):
    d = sum(1 for k in g if k.startswith("sigma_"))
    if label.startswith("singular values"):
        return _tails_hint(int(label.rsplit(" ", 1)[1]), g, c, d)
    if label == "ranks":
        if params.get("tau") is None:
            return HINTS["rank_rule"]
        return _rank_hint(g, d, float(params["tau"]) * float(np.linalg.norm(_f(g["T"]))))
    return HINTS["truncation_vectors"]


def _layer_hint(label, g, c):
    if label == "forward y":
        if "b" in g and "y" in c and _f(c["y"]).shape == _f(g["y"]).shape:
            diff = _f(c["y"]) - _f(g["y"])
            axes = (0, 2, 3) if diff.ndim == 4 else (0,)
            per_channel = diff.mean(axis=axes, keepdims=True)
            if np.linalg.norm(per_channel) > 0 and _close(diff, np.broadcast_to(per_channel, diff.shape), 1e-6):
                return HINTS["bias_twice"]
        return HINTS["forward"]
    if "projection" in label:
        return HINTS["projector"]
    return None


def hint_for(case: dict, row, golden: dict, candidate: dict):
    """The hint for the first failing quantity ``row`` of ``case`` (None if there is none)."""
    kind, label, params = case["kind"], row.label, case["params"]
    if row.message.startswith(("missing", "cannot form")) and kind != "tdlrt_step":
        return None
    try:
        if kind == "tdlrt_step":
            return _step_hint(label, golden, candidate, params)
        if kind == "hosvd":
            return _hosvd_hint(label, golden, candidate, params)
        if kind in ("tucker_conv2d", "lowrank_linear", "matrix_conv2d", "conv2d"):
            return _layer_hint(label, golden, candidate)
        if kind == "lenet5_steps":
            return HINTS["training"]
    except (KeyError, ValueError, IndexError, TypeError):  # a malformed candidate: no hint, no crash
        return None
    return None
