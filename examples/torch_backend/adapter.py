"""Adapter between refdlrt's conformance checker and the PyTorch TDLRT of :mod:`.tdlrt`.

One method per case kind: ``kind(inputs, params) -> outputs``, NumPy arrays in and out
(float64 unless noted; ranks int64). Modes are 0-based; conv geometry is NCHW / OIHW
cross-correlation as in ``torch.nn.functional.conv2d``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import tdlrt as T
from .tdlrt import BUGS


def _t(a):
    return torch.as_tensor(np.asarray(a))


def _np(out):
    return {k: v.detach().numpy().copy() for k, v in out.items()}


def _geom(params):
    return {k: tuple(int(v) for v in params.get(k, d)) for k, d in
            (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)))}


def _factors(inputs, d, name="U"):
    return [_t(inputs[f"{name}_{i}"]) for i in range(d)]


class TorchAdapter:
    """The PyTorch backend; ``bug`` (one of :data:`BUGS`, or None) plants one mistake."""

    def __init__(self, bug: str | None = None):
        if bug is not None and bug not in BUGS:
            raise ValueError(f"bug: expected None or one of {', '.join(BUGS)}, got {bug!r}")
        self.bug = bug

    # ---------------------------------------------------------------------- dense conv
    def conv2d(self, inputs, params):
        x, w, dy = (_t(inputs[k]).requires_grad_(True) for k in ("x", "w", "dy"))
        b = _t(inputs["b"]).requires_grad_(True) if "b" in inputs else None
        y = F.conv2d(x, w, b, **_geom(params))
        leaves = [x, w] + ([b] if b is not None else [])
        grads = torch.autograd.grad(y, leaves, dy.detach())
        return _np(dict(zip(["y", "dx", "dw", "db"], [y, *grads])))

    # ------------------------------------------------------------------------- HOSVD
    def hosvd(self, inputs, params):
        X = _t(inputs["T"])
        d, tau = X.ndim, params.get("tau")
        if tau is not None:
            r_max = params.get("r_max")
            r_max = list(X.shape) if r_max is None else np.broadcast_to(r_max, (d,)).tolist()
            lo = [int(params.get("r_min", 1))] * d
            core, Us, sig, ranks = T.hosvd(X, theta=float(tau) * T.fro(X), lo=lo,
                                           hi=[min(int(r), n) for r, n in zip(r_max, X.shape)],
                                           bug=self.bug)
        else:
            core, Us, sig, ranks = T.hosvd(X, ranks=params.get("ranks"), bug=self.bug)
        out = {"core": core, "ranks": torch.tensor(ranks, dtype=torch.int64)}
        out.update({f"U_{i}": U for i, U in enumerate(Us)})
        out.update({f"sigma_{i}": s for i, s in enumerate(sig)})
        return _np(out)

    # -------------------------------------------------------------------- TDLRT step
    def tdlrt_step(self, inputs, params):
        C = _t(inputs["C"])
        v = _t(inputs["v"]) if "v" in inputs else None
        out = T.tdlrt_step(
            C, _factors(inputs, C.ndim), _t(inputs["G"]), float(params["lr"]),
            float(params.get("tau", 0.0)), r_min=int(params.get("r_min", 1)),
            r_max=params.get("r_max"), fixed_rank=bool(params.get("fixed_rank", False)),
            momentum=float(params.get("momentum", 0.0)), v=v, bug=self.bug)
        return _np(out)

    # ---------------------------------------------------------------- low-rank layers
    @staticmethod
    def _projections(G, Us, As):
        """G_K_i = G x_{j != i} U_j^T (mode i unprojected) and G_C = G x_i A_i^T."""
        d = len(Us)
        out = {f"G_K_{i}": T.multi_mode(G, [None if j == i else U for j, U in enumerate(Us)],
                                        transpose=True) for i in range(d)}
        out["G_C"] = T.multi_mode(G, As, transpose=True)
        return out

    def _layer(self, inputs, forward, G_of):
        """y, dx, db by autograd of ``forward(x, b)``; the G projections from G_of(x, dy)."""
        x = _t(inputs["x"]).requires_grad_(True)
        b = _t(inputs["b"]).requires_grad_(True) if "b" in inputs else None
        dy = _t(inputs["dy"])
        y = forward(x, b)
        grads = torch.autograd.grad(y, [x] + ([b] if b is not None else []), dy)
        out = dict(zip(["y", "dx", "db"], [y, *grads]))
        d = 4 if "U_2" in inputs else 2
        out.update(self._projections(G_of(x.detach(), dy), _factors(inputs, d),
                                     _factors(inputs, d, "A")))
        return _np(out)

    def tucker_conv2d(self, inputs, params):
        C, Us, geom = _t(inputs["C"]), _factors(inputs, 4), _geom(params)
        shape = tuple(U.shape[0] for U in Us)
        return self._layer(inputs, lambda x, b: T.tucker_conv2d(x, C, Us, b, geom, self.bug),
                           lambda x, dy: T.conv_weight_grad(x, dy, shape, geom))

    def lowrank_linear(self, inputs, params):
        U0, U1 = _factors(inputs, 2)
        W = U0 @ _t(inputs["C"]) @ U1.T  # out, in
        return self._layer(inputs, lambda x, b: F.linear(x, W, b), lambda x, dy: dy.T @ x)

    def matrix_conv2d(self, inputs, params):
        U0, U1 = _factors(inputs, 2)
        W = U0 @ _t(inputs["C"]) @ U1.T  # C_out, C_in kh kw
        kh, kw = (int(k) for k in params["kernel_size"])
        kernel = W.reshape(W.shape[0], W.shape[1] // (kh * kw), kh, kw)  # OIHW
        geom = _geom(params)
        return self._layer(
            inputs, lambda x, b: F.conv2d(x, kernel, b, **geom),
            lambda x, dy: T.conv_weight_grad(x, dy, kernel.shape, geom).reshape(W.shape))

    # ------------------------------------------------------------------------ LeNet5
    def lenet5_steps(self, inputs, params):
        steps = int(params["steps"])
        p = {k: _t(v) for k, v in inputs.items() if not k.startswith(("x_", "y_"))}
        batches = [(_t(inputs[f"x_{s}"]), _t(inputs[f"y_{s}"]).long()) for s in range(steps)]
        records = T.lenet5_steps(p, batches, float(params["lr"]), float(params["tau"]),
                                 int(params.get("r_min", 1)), bug=self.bug)
        return _np({f"{k}_{s}": v for s, rec in enumerate(records) for k, v in rec.items()})
