"""refdlrt as an oracle adapter: one method per case kind, ``kind(inputs, params) -> outputs``.

This is the interface every candidate implements (see docs/ORACLE.md); here it is filled in
with refdlrt's own functions, and the golden files are its outputs. Arrays are NumPy; modes
are 0-based; names of inputs and outputs are those of docs/ORACLE.md.
"""

from __future__ import annotations

import numpy as np

from ..dlrt.integrator import (
    _fixed_rank_basis,
    _truncate_adaptive,
    augment,
    k_step,
    lift,
    s_step,
    tdlrt_step,
    transport_velocity,
)
from ..dlrt.projector import DenseGradient, MomentumGradient
from ..nn.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU
from ..nn.lowrank_layers import (
    LowRankLinear,
    MatrixConv2d,
    TuckerConv2d,
    tucker_conv2d_backward,
    tucker_conv2d_forward,
)
from ..ops.conv import conv2d_backward, conv2d_forward
from ..ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from ..tensor.hosvd import hosvd
from ..tensor.tucker import Tucker

__all__ = ["RefdlrtAdapter", "KINDS", "lenet5_layers"]

KINDS = ("conv2d", "hosvd", "tdlrt_step", "tucker_conv2d", "lowrank_linear", "matrix_conv2d",
         "lenet5_steps")


def _factors(inputs, prefix="U", d=None):
    d = d if d is not None else sum(1 for k in inputs if k.startswith(f"{prefix}_") and k[len(prefix) + 1:].isdigit())
    return tuple(inputs[f"{prefix}_{i}"] for i in range(d))


def _geometry(params):
    return dict(stride=tuple(params["stride"]), padding=tuple(params["padding"]),
                dilation=tuple(params["dilation"]))


def _projections(proj, factors, bases):
    """G_K_i = G x_{j≠i} U_j^T for every i (the K-steps' projections) and G_C = G x_i A_i^T."""
    d = len(factors)
    out = {f"G_K_{i}": proj.project([None if j == i else U for j, U in enumerate(factors)])
           for i in range(d)}
    out["G_C"] = proj.project(list(bases))
    return out


def lenet5_layers(inputs):
    """LeNet5 with conv2 Tucker and fc1, fc2 matrix low-rank, from the case's arrays."""
    T = lambda p: Tucker(inputs[f"{p}_C"], _factors(inputs, f"{p}_U"))  # noqa: E731
    layers = [
        ("conv1", Conv2d(inputs["conv1_w"].copy(), inputs["conv1_b"].copy(), padding=2)), ("", ReLU()),
        ("", MaxPool2d(2)),
        ("conv2", TuckerConv2d(T("conv2"), inputs["conv2_b"].copy())), ("", ReLU()), ("", MaxPool2d(2)),
        ("", Flatten()),
        ("fc1", LowRankLinear(T("fc1"), inputs["fc1_b"].copy())), ("", ReLU()),
        ("fc2", LowRankLinear(T("fc2"), inputs["fc2_b"].copy())), ("", ReLU()),
        ("fc3", Linear(inputs["fc3_w"].copy(), inputs["fc3_b"].copy())),
    ]
    return layers


class RefdlrtAdapter:
    """The reference's answers for every case kind (the golden outputs)."""

    def conv2d(self, inputs, params):
        x, w, b, dy = inputs["x"], inputs["w"], inputs.get("b"), inputs["dy"]
        y, cache = conv2d_forward(x, w, b, **_geometry(params))
        dx, dw, db = conv2d_backward(dy, cache)
        out = dict(y=y, dx=dx, dw=dw)
        if b is not None:
            out["db"] = db
        return out

    def hosvd(self, inputs, params):
        T = inputs["T"]
        if params.get("ranks") is not None:
            Y, info = hosvd(T, ranks=tuple(params["ranks"]))
        else:
            r_max = params.get("r_max")
            Y, info = hosvd(T, tau=params["tau"], r_min=params.get("r_min", 1),
                            r_max=None if r_max is None else tuple(r_max))
        out = {f"sigma_{i}": s for i, s in enumerate(info.singular_values)}
        out.update({f"U_{i}": U for i, U in enumerate(Y.factors)})
        out.update(core=Y.core, ranks=np.asarray(Y.ranks, dtype=np.int64))
        return out

    def tdlrt_step(self, inputs, params):
        """Every intermediate of ALGORITHM.md §2 in order, by the named steps."""
        C, G = inputs["C"], inputs["G"]
        U = _factors(inputs)
        d, lr, tau = len(U), float(params["lr"]), float(params["tau"])
        fixed, mu = bool(params.get("fixed_rank", False)), float(params.get("momentum", 0.0))
        r_max = params.get("r_max")
        r_max = [int(n) for n in G.shape] if r_max is None else [min(int(r), n) for r, n in zip(r_max, G.shape)]
        grad = DenseGradient(G)
        if mu and "v" in inputs:
            grad = MomentumGradient(grad, inputs["v"], U, mu)
        out, U_hat, M_hat = {}, [], []
        for i in range(d):
            K, grad_K = k_step(C, U, i, grad, lr)
            out[f"K_{i}"], out[f"grad_K_{i}"] = K, grad_K
            Uh, Mh = _fixed_rank_basis(K, U[i], i) if fixed else augment(K, U[i], direction=grad_K)
            U_hat.append(Uh)
            M_hat.append(Mh)
            out[f"U_hat_{i}"] = Uh
        C_hat = lift(C, M_hat)
        C_tilde, grad_C = s_step(C_hat, U_hat, grad, lr)
        out.update(C_hat=C_hat, grad_C_hat=grad_C, C_tilde=C_tilde)
        Y_new, theta, _, _ = _truncate_adaptive(C_tilde, U_hat, tau, [not fixed] * d,
                                                int(params.get("r_min", 1)), r_max)
        out["theta"] = np.asarray(theta, dtype=C.dtype)
        if not fixed:
            _, info = hosvd(C_tilde, tau=tau)  # the singular values the τ rule looked at
            out.update({f"sigma_{i}": s for i, s in enumerate(info.singular_values)})
        out["ranks"] = np.asarray(Y_new.ranks, dtype=np.int64)
        out["C_new"] = Y_new.core
        out.update({f"U_new_{i}": Un for i, Un in enumerate(Y_new.factors)})
        if mu:
            out["v_new"] = transport_velocity(grad_C, U_hat, Y_new.factors)
        # the walk above is the library's step, bit for bit
        Y_lib, info = tdlrt_step(Tucker(C, U), G, lr, tau, r_min=int(params.get("r_min", 1)),
                                 r_max=params.get("r_max"), fixed_rank=fixed, momentum=mu,
                                 velocity=inputs.get("v"))
        assert np.array_equal(Y_lib.core, Y_new.core), "oracle walk != tdlrt_step"
        return out

    def tucker_conv2d(self, inputs, params):
        U = _factors(inputs, d=4)
        Y = Tucker(inputs["C"], U)
        b = inputs.get("b")
        y, cache = tucker_conv2d_forward(inputs["x"], Y, b, **_geometry(params))
        dx, db, proj = tucker_conv2d_backward(inputs["dy"], cache)
        out = dict(y=y, dx=dx, **_projections(proj, U, _factors(inputs, "A", 4)))
        if b is not None:
            out["db"] = db
        return out

    def _matrix_layer(self, layer, inputs):
        y = layer.forward(inputs["x"])
        dx = layer.backward(inputs["dy"])
        out = dict(y=y, dx=dx, **_projections(layer.projector(), layer.weight.factors,
                                              _factors(inputs, "A", 2)))
        if "b" in layer.grads:
            out["db"] = layer.grads["b"]
        return out

    def lowrank_linear(self, inputs, params):
        Y = Tucker(inputs["C"], _factors(inputs, d=2))
        return self._matrix_layer(LowRankLinear(Y, inputs.get("b")), inputs)

    def matrix_conv2d(self, inputs, params):
        Y = Tucker(inputs["C"], _factors(inputs, d=2))
        layer = MatrixConv2d(Y, inputs.get("b"), kernel_size=tuple(params["kernel_size"]),
                             **_geometry(params))
        return self._matrix_layer(layer, inputs)

    def lenet5_steps(self, inputs, params):
        layers = lenet5_layers(inputs)
        lr, tau, r_min = float(params["lr"]), float(params["tau"]), int(params.get("r_min", 1))
        out = {}
        for s in range(int(params["steps"])):
            h = inputs[f"x_{s}"]
            for _, layer in layers:
                h = layer.forward(h)
            loss, cache = softmax_cross_entropy(h, inputs[f"y_{s}"])
            g = softmax_cross_entropy_backward(cache)
            for _, layer in reversed(layers):
                g = layer.backward(g)
            out[f"loss_{s}"] = np.asarray(loss)
            for name, layer in layers:
                if not name:
                    continue
                for k, v in layer.grads.items():  # dense weights and every bias: plain SGD
                    layer.params[k] = layer.params[k] - lr * v
                if hasattr(layer, "weight"):
                    layer.weight, _ = tdlrt_step(layer.weight, layer.projector(), lr, tau,
                                                 r_min=r_min, diagnostics=False)
                    out[f"ranks_{name}_{s}"] = np.asarray(layer.weight.ranks, dtype=np.int64)
                    out[f"W_{name}_{s}"] = layer.dense_weight()
                else:
                    out[f"W_{name}_{s}"] = layer.params["w"]
                out[f"b_{name}_{s}"] = layer.params["b"]
        return out
