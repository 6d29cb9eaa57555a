"""Models as readable sequences of layer specs, and the builder that turns them into layers.

A model is a tuple of :class:`LayerSpec`. Which weight layers are low-rank is decided by the
training method (see :func:`lowrank_plan`): conv layers become Tucker (or matrix) layers and
linear layers matrix low-rank, except the first conv and the last linear layer, which stay
dense as is common.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..tensor.hosvd import hosvd
from ..tensor.ranks import init_ranks
from ..tensor.tucker import Tucker

__all__ = ["LayerSpec", "lenet5", "vgg_small", "MODELS", "lowrank_plan", "build_model"]

METHODS = ("dense", "tdlrt", "tdlrt-fixed", "matrix-dlrt", "tucker-direct")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``kind`` in {conv, linear, bn, relu, maxpool, flatten} and its arguments."""

    kind: str
    args: dict = field(default_factory=dict)
    name: str = ""


def lenet5(in_channels: int = 1, n_classes: int = 10, input_size: int = 28):
    """LeNet5: conv 6 (5x5, pad 2) - pool - conv 16 (5x5) - pool - fc 400-120-84-n_classes."""
    s = (input_size // 2 - 4) // 2  # 5 for 28x28 inputs
    return (
        LayerSpec("conv", dict(c_in=in_channels, c_out=6, k=5, padding=2), "conv1"),
        LayerSpec("relu"),
        LayerSpec("maxpool", dict(k=2)),
        LayerSpec("conv", dict(c_in=6, c_out=16, k=5, padding=0), "conv2"),
        LayerSpec("relu"),
        LayerSpec("maxpool", dict(k=2)),
        LayerSpec("flatten"),
        LayerSpec("linear", dict(n_in=16 * s * s, n_out=120), "fc1"),
        LayerSpec("relu"),
        LayerSpec("linear", dict(n_in=120, n_out=84), "fc2"),
        LayerSpec("relu"),
        LayerSpec("linear", dict(n_in=84, n_out=n_classes), "fc3"),
    )


def vgg_small(widths=(32, 32, 64, 64), in_channels: int = 1, n_classes: int = 10, input_size: int = 28):
    """conv3x3-BN-ReLU blocks, a 2x2 max pool after every second block, then a linear classifier."""
    specs, c, size = [], in_channels, input_size
    for j, w in enumerate(widths):
        specs += [
            LayerSpec("conv", dict(c_in=c, c_out=w, k=3, padding=1), f"conv{j + 1}"),
            LayerSpec("bn", dict(c=w), f"bn{j + 1}"),
            LayerSpec("relu"),
        ]
        c = w
        if j % 2 == 1:
            specs.append(LayerSpec("maxpool", dict(k=2)))
            size //= 2
    specs += [
        LayerSpec("flatten"),
        LayerSpec("linear", dict(n_in=c * size * size, n_out=128), "fc1"),
        LayerSpec("relu"),
        LayerSpec("linear", dict(n_in=128, n_out=n_classes), "fc2"),
    ]
    return tuple(specs)


MODELS = {"lenet5": lenet5, "vgg_small": vgg_small}


def lowrank_plan(specs, method: str) -> dict:
    """Map layer name -> 'dense' | 'tucker' | 'matrix' for a training method.

    The first conv and the last linear layer stay dense; other conv layers are Tucker
    (matrix for ``matrix-dlrt``), other linear layers matrix low-rank. ``dense``: all dense.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    convs = [s.name for s in specs if s.kind == "conv"]
    linears = [s.name for s in specs if s.kind == "linear"]
    plan = {n: "dense" for n in convs + linears}
    if method == "dense":
        return plan
    for n in convs[1:]:
        plan[n] = "matrix" if method == "matrix-dlrt" else "tucker"
    for n in linears[:-1]:
        plan[n] = "matrix"
    return plan


def _dense_init(shape, fan_in, rng, dtype, *, last=False):
    """He (kaiming) uniform init, bound sqrt(6 / fan_in), for layers followed by a ReLU; the
    last (logit) layer and all biases use PyTorch's default bound 1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in) if last else math.sqrt(6.0 / fan_in)
    w = rng.uniform(-bound, bound, size=shape).astype(dtype)
    b = rng.uniform(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), size=shape[0]).astype(dtype)
    return w, b


def _lowrank_weight(w, ranks, xp) -> Tucker:
    """Truncated HOSVD of the dense init at the given ranks, its core rescaled so that
    ||Y||_F = ||w||_F (the truncation would otherwise shrink the signal through the layer)."""
    Y, _ = hosvd(w, ranks=ranks)
    core = Y.core * (np.linalg.norm(w) / np.linalg.norm(Y.core))
    return Tucker(xp.asarray(core.astype(w.dtype)), tuple(xp.asarray(U) for U in Y.factors))


def build_model(specs, method: str, rng: np.random.Generator, *, init_rank=0.5, ranks=None,
                dtype=np.float32, xp=np):
    """Instantiate the layers of ``specs`` for ``method``.

    Parameters
    ----------
    init_rank : float
        Initial ranks as a fraction of full rank (per mode), for every low-rank layer.
    ranks : dict, optional
        Explicit initial ranks per layer name (overrides ``init_rank`` for that layer).

    Returns
    -------
    list of layers (see ``refdlrt.nn.layers`` and ``refdlrt.nn.lowrank_layers``) and the plan.
    """
    from . import layers as L
    from . import lowrank_layers as LR

    plan = lowrank_plan(specs, method)
    ranks = dict(ranks or {})
    unknown = set(ranks) - {n for n, kind in plan.items() if kind != "dense"}
    if unknown:
        raise ValueError(f"ranks given for layers that are not low-rank here: {sorted(unknown)}")
    last_linear = [s.name for s in specs if s.kind == "linear"][-1]
    out = []
    for s in specs:
        a = s.args
        if s.kind == "conv":
            shape = (a["c_out"], a["c_in"], a["k"], a["k"])
            w, b = _dense_init(shape, a["c_in"] * a["k"] ** 2, rng, dtype)
            kind = plan[s.name]
            if kind == "dense":
                layer = L.Conv2d(xp.asarray(w), xp.asarray(b), padding=a["padding"])
            elif kind == "tucker":
                r = tuple(ranks.get(s.name) or init_ranks(shape, init_rank))
                layer = LR.TuckerConv2d(_lowrank_weight(w, r, xp), xp.asarray(b), padding=a["padding"])
            else:
                mat = w.reshape(shape[0], -1)
                r = tuple(ranks.get(s.name) or init_ranks(mat.shape, init_rank))
                layer = LR.MatrixConv2d(_lowrank_weight(mat, r, xp), xp.asarray(b),
                                        kernel_size=(a["k"], a["k"]), padding=a["padding"])
        elif s.kind == "linear":
            shape = (a["n_out"], a["n_in"])
            w, b = _dense_init(shape, a["n_in"], rng, dtype, last=s.name == last_linear)
            if plan[s.name] == "dense":
                layer = L.Linear(xp.asarray(w), xp.asarray(b))
            else:
                r = tuple(ranks.get(s.name) or init_ranks(shape, init_rank))
                layer = LR.LowRankLinear(_lowrank_weight(w, r, xp), xp.asarray(b))
        elif s.kind == "bn":
            c = a["c"]
            layer = L.BatchNorm2d(xp.ones(c, dtype=dtype), xp.zeros(c, dtype=dtype),
                                  xp.zeros(c, dtype=dtype), xp.ones(c, dtype=dtype))
        elif s.kind == "relu":
            layer = L.ReLU()
        elif s.kind == "maxpool":
            layer = L.MaxPool2d(a["k"])
        elif s.kind == "flatten":
            layer = L.Flatten()
        else:
            raise ValueError(f"unknown layer kind {s.kind!r}")
        layer.name = s.name or s.kind
        if method == "tucker-direct":
            if hasattr(layer, "orthonormal"):
                layer.orthonormal = False  # plain gradient descent on the factors leaves the manifold
            if hasattr(layer, "k_form"):
                layer.k_form = False  # it takes no K-steps: the K-form's convolutions would buy nothing
        out.append(layer)
    return out, plan
