"""The golden cases: inputs and parameters, drawn from fixed seeds (``numpy.random.Generator``).

Each case is (name, kind, params, inputs); the outputs are :class:`RefdlrtAdapter`'s. Cases of
the τ rule are drawn so that every rank decision has a margin (a float32 candidate must make
the same decision), except ``hosvd_tie``, whose tail equals ϑ exactly: it tells ``≤`` from ``<``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dlrt.problems import random_tucker
from ..tensor.hosvd import hosvd, tail_norms
from ..tensor.tucker import multi_mode_product
from ..training.datasets import load_embedded_mnist
from .reference import RefdlrtAdapter

__all__ = ["Case", "build_cases", "case_names", "SEED"]

SEED = 20231105

MARGIN = 1e-2  # relative gap between a tail and ϑ required at every rank decision


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    params: dict
    inputs: dict


def _orthonormal(n, r, rng):
    return np.linalg.qr(rng.standard_normal((n, r)))[0]


def _conv_case(name, rng, N, C, O, hw, k, stride, padding, dilation, bias):
    x = rng.standard_normal((N, C) + hw)
    w = rng.standard_normal((O, C) + k) / math.sqrt(C * k[0] * k[1])
    Ho = (hw[0] + 2 * padding[0] - dilation[0] * (k[0] - 1) - 1) // stride[0] + 1
    Wo = (hw[1] + 2 * padding[1] - dilation[1] * (k[1] - 1) - 1) // stride[1] + 1
    inputs = dict(x=x, w=w, dy=rng.standard_normal((N, O, Ho, Wo)))
    if bias:
        inputs["b"] = rng.standard_normal(O)
    params = dict(stride=list(stride), padding=list(padding), dilation=list(dilation))
    return Case(name, "conv2d", params, inputs)


CONV_GEOMETRIES = [  # name, N, C_in, C_out, (H, W), kernel, stride, padding, dilation, bias
        ("conv_3x3_pad1_bias", 2, 3, 4, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), True),
        ("conv_stride2", 2, 3, 5, (8, 7), (3, 3), (2, 2), (0, 0), (1, 1), True),
        ("conv_dilation2", 1, 2, 3, (9, 9), (3, 3), (1, 1), (2, 2), (2, 2), True),
        ("conv_rect_kernel", 2, 3, 4, (7, 8), (3, 2), (2, 1), (1, 0), (1, 1), True),
        ("conv_1x1_no_bias", 2, 5, 3, (4, 5), (1, 1), (1, 1), (0, 0), (1, 1), False),
        ("conv_lenet_c2", 2, 6, 16, (14, 14), (5, 5), (1, 1), (0, 0), (1, 1), True),
        ("conv_mixed", 1, 2, 3, (10, 9), (2, 3), (2, 1), (2, 1), (2, 2), False),
]


def _noisy_tucker(shape, ranks, rng, noise):
    T = random_tucker(shape, ranks, rng).to_tensor()
    E = rng.standard_normal(shape)
    return T + noise * np.linalg.norm(T) / np.linalg.norm(E) * E


def _rank_margin_ok(sigmas, theta, ranks, lo, hi) -> bool:
    """Every rank chosen with a margin: tail(r) <= ϑ(1 - m) and tail(r - 1) > ϑ(1 + m),
    unless the bound decided (r == lo or r == hi)."""
    for s, r, a, b in zip(sigmas, ranks, lo, hi):
        t = tail_norms(s)
        if r not in (a, b) and not t[r] <= theta * (1 - MARGIN):
            return False
        if r > a and r < b and not t[r - 1] > theta * (1 + MARGIN):
            return False
    return True


def _hosvd_case(name, rng, shape, ranks, noise, tau, r_min, r_max):
    for _ in range(50):  # redraw until every decision has a margin
        T = _noisy_tucker(shape, ranks, rng, noise)
        _, info = hosvd(T, tau=tau, r_min=r_min, r_max=r_max)
        lo = [min(r_min, n) for n in shape]
        hi = [min(n, math.prod(shape) // n) for n in shape] if r_max is None else \
            [min(r, n) for r, n in zip(r_max, shape)]
        if _rank_margin_ok(info.singular_values, info.theta, info.ranks, lo, hi):
            return Case(name, "hosvd", dict(tau=tau, ranks=None, r_min=r_min, r_max=r_max), dict(T=T))
    raise RuntimeError(f"{name}: no draw with rank margins")  # pragma: no cover


def _hosvd_tie(name, rng):
    """σ = (4, 2, 2, 1): ||T|| = 5, ϑ = 0.2 * 5 = 1 = the tail at r = 3, exactly in binary."""
    D = np.zeros((4, 4, 4))
    for j, s in enumerate((4.0, 2.0, 2.0, 1.0)):
        D[j, j, j] = s
    return Case(name, "hosvd", dict(tau=0.2, ranks=None, r_min=1, r_max=None), dict(T=D))


def _hosvd_fixed(name, rng):
    return Case(name, "hosvd", dict(tau=None, ranks=[2, 3, 2], r_min=1, r_max=None),
                dict(T=rng.standard_normal((5, 4, 3))))


def _step_case(name, rng, shape, ranks, *, lr, tau, grad_scale=1.0, fixed_rank=False,
               momentum=0.0, r_min=1, r_max=None):
    ref = RefdlrtAdapter()
    for _ in range(50):  # redraw until every rank decision has a margin
        Y = random_tucker(shape, ranks, rng)
        G = rng.standard_normal(shape)
        G *= grad_scale * np.linalg.norm(Y.core) / np.linalg.norm(G)
        inputs = dict(C=Y.core, G=G, **{f"U_{i}": U for i, U in enumerate(Y.factors)})
        if momentum:
            inputs["v"] = rng.standard_normal(Y.ranks) * np.linalg.norm(G) / math.sqrt(Y.core.size)
        params = dict(lr=lr, tau=tau, r_min=r_min, r_max=r_max, fixed_rank=fixed_rank,
                      momentum=momentum)
        if fixed_rank:
            return Case(name, "tdlrt_step", params, inputs)
        out = ref.tdlrt_step(inputs, params)
        d = len(shape)
        sig = [out[f"sigma_{i}"] for i in range(d)]
        r_aug = [out[f"U_hat_{i}"].shape[1] for i in range(d)]
        hi = [min(ra, n if r_max is None else r_max[i]) for i, (ra, n) in enumerate(zip(r_aug, shape))]
        lo = [min(r_min, ra) for ra in r_aug]
        _, info = hosvd(out["C_tilde"], tau=tau, r_min=lo, r_max=hi)
        if tuple(info.ranks) == tuple(out["ranks"]) and _rank_margin_ok(sig, float(out["theta"]), info.ranks, lo, hi):
            return Case(name, "tdlrt_step", params, inputs)
    raise RuntimeError(f"{name}: no draw with rank margins")  # pragma: no cover


STEP_CASES = [  # name, shape, ranks, keyword arguments
    ("step_d2", (8, 6), (3, 3), dict(lr=0.3, tau=0.1)),
    ("step_d3", (6, 5, 4), (3, 3, 2), dict(lr=0.3, tau=0.1)),
    ("step_d4", (8, 6, 3, 3), (4, 3, 2, 2), dict(lr=0.3, tau=0.1)),
    ("step_d3_ranks_grow", (7, 6, 5), (2, 2, 2), dict(lr=1.0, tau=0.02, grad_scale=3.0)),
    ("step_d3_ranks_fall", (6, 5, 4), (5, 4, 4), dict(lr=0.05, tau=0.4)),
    ("step_d4_bounds", (8, 6, 3, 3), (4, 3, 2, 2), dict(lr=0.5, tau=0.05, r_min=2, r_max=[5, 4, 3, 3])),
    ("step_d3_fixed_rank", (6, 5, 4), (3, 3, 2), dict(lr=0.3, tau=0.0, fixed_rank=True)),
    ("step_d3_momentum", (6, 5, 4), (3, 3, 2), dict(lr=0.3, tau=0.15, momentum=0.9)),
    ("step_d4_momentum", (8, 6, 3, 3), (4, 3, 2, 2), dict(lr=0.3, tau=0.1, momentum=0.5)),
]


def _bases(shape, ranks, extra, rng):
    """Orthonormal A_i (n_i x min(n_i, r_i + extra)): the bases the S-step projects onto."""
    return {f"A_{i}": _orthonormal(n, min(n, r + extra), rng) for i, (n, r) in enumerate(zip(shape, ranks))}


def _tucker_conv_case(name, rng, shape, ranks, hw, geo, bias):
    Y = random_tucker(shape, ranks, rng)
    x = rng.standard_normal((2, shape[1]) + hw)
    (sh, sw), (ph, pw), (dh, dw) = geo
    Ho = (hw[0] + 2 * ph - dh * (shape[2] - 1) - 1) // sh + 1
    Wo = (hw[1] + 2 * pw - dw * (shape[3] - 1) - 1) // sw + 1
    inputs = dict(x=x, C=Y.core, dy=rng.standard_normal((2, shape[0], Ho, Wo)),
                  **{f"U_{i}": U for i, U in enumerate(Y.factors)}, **_bases(shape, ranks, 1, rng))
    if bias:
        inputs["b"] = rng.standard_normal(shape[0])
    return Case(name, "tucker_conv2d", dict(stride=list(geo[0]), padding=list(geo[1]),
                                            dilation=list(geo[2])), inputs)


def _lowrank_linear_case(name, rng):
    Y = random_tucker((7, 9), (3, 3), rng)
    return Case(name, "lowrank_linear", {}, dict(
        x=rng.standard_normal((5, 9)), C=Y.core, U_0=Y.factors[0], U_1=Y.factors[1],
        b=rng.standard_normal(7), dy=rng.standard_normal((5, 7)), **_bases((7, 9), (3, 3), 2, rng)))


def _matrix_conv_case(name, rng):
    Y = random_tucker((5, 3 * 3 * 2), (3, 3), rng)
    return Case(name, "matrix_conv2d",
                dict(kernel_size=[3, 2], stride=[1, 2], padding=[1, 1], dilation=[1, 1]),
                dict(x=rng.standard_normal((2, 3, 6, 7)), C=Y.core, U_0=Y.factors[0],
                     U_1=Y.factors[1], b=rng.standard_normal(5),
                     dy=rng.standard_normal((2, 5, 6, 4)), **_bases((5, 18), (3, 3), 2, rng)))


def _lenet_case(name, rng):
    def dense(shape, fan_in):
        return rng.uniform(-1, 1, size=shape) * math.sqrt(6.0 / fan_in), rng.uniform(-1, 1, size=shape[0]) / math.sqrt(fan_in)

    def lowrank(prefix, w, ranks):
        Y, _ = hosvd(w, ranks=ranks)
        out = {f"{prefix}_C": Y.core}
        out.update({f"{prefix}_U_{i}": U for i, U in enumerate(Y.factors)})
        return out

    inputs = {}
    inputs["conv1_w"], inputs["conv1_b"] = dense((6, 1, 5, 5), 25)
    w2, inputs["conv2_b"] = dense((16, 6, 5, 5), 150)
    inputs.update(lowrank("conv2", w2, (8, 4, 4, 4)))
    w3, inputs["fc1_b"] = dense((120, 400), 400)
    inputs.update(lowrank("fc1", w3, (24, 24)))
    w4, inputs["fc2_b"] = dense((84, 120), 120)
    inputs.update(lowrank("fc2", w4, (16, 16)))
    inputs["fc3_w"], inputs["fc3_b"] = dense((10, 84), 84)
    data = load_embedded_mnist(n_train=48, n_test=1, seed=0)
    x = ((data.x_train - 0.1307) / 0.3081).astype(np.float64)
    for s in range(3):
        inputs[f"x_{s}"] = x[16 * s:16 * (s + 1)]
        inputs[f"y_{s}"] = data.y_train[16 * s:16 * (s + 1)].astype(np.int64)
    return Case(name, "lenet5_steps", dict(lr=0.1, tau=0.1, steps=3, r_min=1), inputs)


def _builders() -> list:
    """(name, builder(name, rng)) for every case, in the order of the manifest."""
    out = [(g[0], lambda n, rng, g=g: _conv_case(n, rng, *g[1:])) for g in CONV_GEOMETRIES]
    for name, shape, ranks, noise, tau, r_min, r_max in [
        ("hosvd_tau", (6, 5, 4), (3, 2, 2), 1e-2, 0.05, 1, None),
        ("hosvd_bounds", (6, 5, 4, 3), (3, 3, 2, 2), 5e-2, 0.2, 2, [4, 4, 3, 2]),
        ("hosvd_lowrank", (7, 6, 5), (3, 2, 2), 0.0, 1e-4, 1, None),
    ]:
        out.append((name, lambda n, rng, a=(shape, ranks, noise, tau, r_min, r_max): _hosvd_case(n, rng, *a)))
    out += [("hosvd_tie", _hosvd_tie), ("hosvd_fixed_ranks", _hosvd_fixed)]
    out += [(name, lambda n, rng, a=(shape, ranks), kw=kw: _step_case(n, rng, *a, **kw))
            for name, shape, ranks, kw in STEP_CASES]
    out += [
        ("tucker_conv_bias", lambda n, rng: _tucker_conv_case(
            n, rng, (6, 4, 3, 3), (3, 2, 2, 2), (7, 6), ((1, 1), (1, 1), (1, 1)), True)),
        ("tucker_conv_strided", lambda n, rng: _tucker_conv_case(
            n, rng, (5, 3, 3, 2), (3, 2, 2, 2), (9, 8), ((2, 1), (1, 0), (1, 2)), False)),
        ("lowrank_linear", _lowrank_linear_case),
        ("matrix_conv", _matrix_conv_case),
        ("lenet5_three_steps", _lenet_case),
    ]
    return out


def case_names() -> list:
    return [name for name, _ in _builders()]


def build_cases(dtype=np.float64, only=None) -> list:
    """The golden cases (all, or those named in ``only``), inputs cast to ``dtype`` (labels
    stay int64). Case k draws from its own generator, default_rng([SEED, k]), so a case does
    not depend on which others are built."""
    out = []
    for k, (name, build) in enumerate(_builders()):
        if only is not None and name not in only:
            continue
        c = build(name, np.random.default_rng([SEED, k]))
        inputs = {key: (v.astype(dtype) if v.dtype.kind == "f" else v) for key, v in c.inputs.items()}
        if c.kind in ("tdlrt_step", "tucker_conv2d", "lowrank_linear", "matrix_conv2d"):
            inputs = _reorthonormalize(inputs)
        out.append(Case(c.name, c.kind, c.params, inputs))
    return out


def _reorthonormalize(inputs):
    """After a cast to float32 the factors are orthonormal only to float32 rounding; re-QR them
    in that dtype (and fold R into the core) so that the step's orthonormality check holds."""
    keys = sorted(k for k in inputs if k.startswith("U_"))
    if not keys or inputs[keys[0]].dtype == np.float64:
        return inputs
    out = dict(inputs)
    Rs = []
    for k in keys:
        Q, R = np.linalg.qr(inputs[k])
        out[k] = Q.astype(inputs[k].dtype)
        Rs.append(R)
    out["C"] = multi_mode_product(inputs["C"].astype(np.float64), Rs).astype(inputs["C"].dtype)
    return out

