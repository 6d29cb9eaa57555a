"""Tests of the dense layer wrappers in refdlrt.nn.layers.

Each wrapper must give exactly what its pure forward/backward pair gives (same arrays, same
numbers), keep ``params`` / ``grads`` / ``state`` consistent, and BatchNorm2d must track its
running statistics (oracles: the formula with numpy mean / unbiased var, and torch's
F.batch_norm, which updates running stats in place).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import conv_geometries

from refdlrt.backend import to_numpy
from refdlrt.nn.layers import (
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)
from refdlrt.ops.activation import relu_backward, relu_forward
from refdlrt.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from refdlrt.ops.conv import conv2d_backward, conv2d_forward
from refdlrt.ops.linear import flatten_backward, flatten_forward, linear_backward, linear_forward
from refdlrt.ops.pooling import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from refdlrt.tolerances import assert_close


def same(a, b):
    """Bitwise equality: the wrapper must call the very same code on the very same arrays."""
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


@st.composite
def conv_cases(draw):
    return {**draw(conv_geometries()), "bias": draw(st.booleans()), "seed": draw(st.integers(0, 2**32 - 1))}


@given(case=conv_cases())
def test_conv2d_layer_is_the_pure_pair(xp, case):
    rng = np.random.default_rng(case["seed"])
    w = xp.asarray(rng.standard_normal((case["c_out"], case["c_in"], *case["k"])))
    b = xp.asarray(rng.standard_normal(case["c_out"])) if case["bias"] else None
    x = xp.asarray(rng.standard_normal((case["N"], case["c_in"], *case["hw"])))
    geo = {"stride": case["stride"], "padding": case["padding"], "dilation": case["dilation"]}
    layer = Conv2d(w, b, **geo)
    y = layer.forward(x, training=True)
    y_ref, cache = conv2d_forward(x, w, b, **geo)
    same(y, y_ref)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(dy)
    dx_ref, dw_ref, db_ref = conv2d_backward(dy, cache)
    same(dx, dx_ref)
    same(layer.grads["w"], dw_ref)
    assert set(layer.grads) == set(layer.params) == ({"w", "b"} if case["bias"] else {"w"})
    if case["bias"]:
        same(layer.grads["b"], db_ref)


def test_conv2d_reads_params_at_each_forward(xp, rng):
    """The optimiser replaces params["w"]; the next forward must use the new array."""
    w = xp.asarray(rng.standard_normal((2, 3, 3, 3)))
    x = xp.asarray(rng.standard_normal((1, 3, 5, 5)))
    layer = Conv2d(w, None, padding=1)
    layer.params["w"] = 2 * w
    same(layer.forward(x), conv2d_forward(x, 2 * w, None, padding=1)[0])


@given(
    n=st.integers(1, 4),
    fin=st.integers(1, 5),
    fout=st.integers(1, 5),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_linear_layer_is_the_pure_pair(xp, n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    w = xp.asarray(rng.standard_normal((fout, fin)))
    b = xp.asarray(rng.standard_normal(fout)) if bias else None
    x = xp.asarray(rng.standard_normal((n, fin)))
    layer = Linear(w, b)
    y = layer.forward(x)
    y_ref, cache = linear_forward(x, w, b)
    same(y, y_ref)
    dy = xp.asarray(rng.standard_normal(y.shape))
    same(layer.backward(dy), linear_backward(dy, cache)[0])
    same(layer.grads["w"], linear_backward(dy, cache)[1])
    assert ("b" in layer.grads) == bias


@pytest.mark.parametrize(
    "layer, fwd, bwd, args",
    [
        (ReLU(), relu_forward, relu_backward, ()),
        (Flatten(), flatten_forward, flatten_backward, ()),
        (MaxPool2d(2), maxpool2d_forward, maxpool2d_backward, ((2, 2), (2, 2), (0, 0))),
        (
            MaxPool2d(3, stride=2, padding=1),
            maxpool2d_forward,
            maxpool2d_backward,
            ((3, 3), (2, 2), (1, 1)),
        ),
        (AvgPool2d(2), avgpool2d_forward, avgpool2d_backward, ((2, 2), (2, 2), (0, 0))),
        (
            AvgPool2d((3, 2), stride=1, padding=(1, 0)),
            avgpool2d_forward,
            avgpool2d_backward,
            ((3, 2), (1, 1), (1, 0)),
        ),
    ],
)
def test_parameter_free_layers_are_the_pure_pairs(xp, rng, layer, fwd, bwd, args):
    x = xp.asarray(rng.standard_normal((2, 3, 6, 5)))
    y = layer.forward(x, training=False)
    y_ref, cache = fwd(x, *args)
    same(y, y_ref)
    dy = xp.asarray(rng.standard_normal(y.shape))
    same(layer.backward(dy), bwd(dy, cache))
    assert layer.params == {} and layer.grads == {} and layer.state == {}


def _bn_inputs(xp, rng, C=3):
    x = xp.asarray(3.0 + 2.0 * rng.standard_normal((4, C, 3, 2)))
    gamma, beta = xp.asarray(rng.standard_normal(C)), xp.asarray(rng.standard_normal(C))
    mean, var = xp.asarray(rng.standard_normal(C)), xp.asarray(1.0 + rng.random(C))
    return x, gamma, beta, mean, var


def test_batchnorm_training_is_the_pure_pair_and_updates_running_stats(xp, rng):
    x, gamma, beta, mean0, var0 = _bn_inputs(xp, rng)
    layer = BatchNorm2d(gamma, beta, mean0, var0, momentum=0.2, eps=1e-4)
    y = layer.forward(x, training=True)
    y_ref, cache, m_ref, v_ref = batchnorm2d_forward(
        x, gamma, beta, mean0, var0, training=True, momentum=0.2, eps=1e-4
    )
    same(y, y_ref)
    same(layer.state["running_mean"], m_ref)
    same(layer.state["running_var"], v_ref)
    # independent formula: unbiased batch variance, exponential moving average
    xn = to_numpy(x)
    mu, var = xn.mean(axis=(0, 2, 3)), xn.var(axis=(0, 2, 3), ddof=1)
    m0, v0 = to_numpy(mean0), to_numpy(var0)
    assert_close(layer.state["running_mean"], 0.8 * m0 + 0.2 * mu, np.float64, scale=4.0)
    assert_close(layer.state["running_var"], 0.8 * v0 + 0.2 * var, np.float64, scale=4.0)
    dy = xp.asarray(rng.standard_normal(y.shape))
    dx = layer.backward(dy)
    dx_ref, dg_ref, db_ref = batchnorm2d_backward(dy, cache)
    same(dx, dx_ref)
    same(layer.grads["gamma"], dg_ref)
    same(layer.grads["beta"], db_ref)
    # a second training step moves the stats again, from the updated values
    before = to_numpy(layer.state["running_mean"])
    layer.forward(x + 1.0, training=True)
    assert_close(
        layer.state["running_mean"], 0.8 * before + 0.2 * (mu + 1.0), np.float64, scale=4.0
    )


def test_batchnorm_eval_uses_and_keeps_running_stats(xp, rng):
    x, gamma, beta, mean0, var0 = _bn_inputs(xp, rng)
    layer = BatchNorm2d(gamma, beta, mean0, var0)
    y = layer.forward(x, training=False)
    c = (1, -1, 1, 1)
    want = gamma.reshape(c) * (x - mean0.reshape(c)) / xp.sqrt(
        var0.reshape(c) + 1e-5
    ) + beta.reshape(c)
    assert_close(y, want, np.float64, scale=float(abs(want).max()))
    same(layer.state["running_mean"], mean0)
    same(layer.state["running_var"], var0)


def test_batchnorm_running_stats_match_torch(torch, rng):
    x, gamma, beta, mean0, var0 = _bn_inputs(np, rng)
    layer = BatchNorm2d(gamma, beta, mean0.copy(), var0.copy(), momentum=0.3)
    tm, tv = torch.tensor(mean0), torch.tensor(var0)
    for step in range(3):
        xs = x + step
        y = layer.forward(xs, training=True)
        yt = torch.nn.functional.batch_norm(
            torch.tensor(xs),
            tm,
            tv,
            torch.tensor(gamma),
            torch.tensor(beta),
            training=True,
            momentum=0.3,
        )
        assert_close(y, yt.numpy(), np.float64, scale=4.0)
    assert_close(layer.state["running_mean"], tm.numpy(), np.float64, scale=4.0)
    assert_close(layer.state["running_var"], tv.numpy(), np.float64, scale=4.0)


def test_batchnorm_default_is_torch_initial_state():
    layer = BatchNorm2d.default(4)
    same(layer.params["gamma"], np.ones(4))
    same(layer.params["beta"], np.zeros(4))
    same(layer.state["running_mean"], np.zeros(4))
    same(layer.state["running_var"], np.ones(4))
    assert layer.momentum == 0.1 and layer.eps == 1e-5


def test_bad_construction_and_call_order_raise(rng):
    with pytest.raises(ValueError, match="4-d"):
        Conv2d(rng.standard_normal((3, 3)))
    with pytest.raises(ValueError, match=r"b: expected shape \(2,\)"):
        Conv2d(rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(3))
    with pytest.raises(ValueError, match=r"b: expected shape \(4,\)"):
        Linear(rng.standard_normal((4, 2)), rng.standard_normal(2))
    with pytest.raises(ValueError, match="running_var"):
        BatchNorm2d(np.ones(3), np.zeros(3), np.zeros(3), np.ones(4))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm2d(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), momentum=2.0)
    for layer in (Conv2d(rng.standard_normal((2, 1, 3, 3))), ReLU(), Flatten(), MaxPool2d(2)):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(rng.standard_normal((1, 2, 3, 3)))
