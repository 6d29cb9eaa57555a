"""Safe as an oracle: inputs from other backends cannot slip through silently (issue 11, item 8),
and the functional Tucker convolution is what the layer runs."""

from __future__ import annotations

import numpy as np
import pytest

from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.problems import random_quadratic, random_tucker
from refdlrt.nn.lowrank_layers import (
    LowRankLinear,
    MatrixConv2d,
    TuckerConv2d,
    tucker_conv2d_backward,
    tucker_conv2d_forward,
)
from refdlrt.tensor.tucker import Tucker


def _skewed(Y: Tucker, i: int, eps: float) -> Tucker:
    factors = list(Y.factors)
    factors[i] = factors[i] * (1 + eps)  # columns no longer unit length
    return Tucker(Y.core, tuple(factors))


@pytest.mark.parametrize("dtype, eps", [(np.float64, 1e-8), (np.float32, 1e-2)])
def test_step_refuses_non_orthonormal_factors(dtype, eps):
    rng = np.random.default_rng(0)
    Y = random_tucker((5, 4, 3), (2, 2, 2), rng)
    Y = Tucker(Y.core.astype(dtype), tuple(U.astype(dtype) for U in Y.factors))
    G = np.ones(Y.shape, dtype=dtype)
    tdlrt_step(Y, G, 0.1, 0.1)  # the orthonormal original is accepted
    with pytest.raises(ValueError, match=r"factor 1 \(4 x 2\) is not orthonormal"):
        tdlrt_step(_skewed(Y, 1, eps), G, 0.1, 0.1)


def test_layers_refuse_non_orthonormal_factors():
    rng = np.random.default_rng(1)
    Y4 = random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng)
    Y2 = random_tucker((5, 4), (2, 2), rng)
    for make in (lambda: TuckerConv2d(_skewed(Y4, 0, 1e-6)),
                 lambda: LowRankLinear(_skewed(Y2, 1, 1e-6)),
                 lambda: MatrixConv2d(_skewed(random_tucker((4, 27), (2, 2), rng), 1, 1e-6),
                                      kernel_size=3)):
        with pytest.raises(ValueError, match="not orthonormal"):
            make()
    layer = TuckerConv2d(Y4)
    layer.orthonormal = False  # the tucker-direct baseline's layers: any factors are accepted
    layer.weight = _skewed(Y4, 2, 1e-6)


def test_r_min_above_a_mode_size_is_clamped_not_an_error():
    # a 1x1 kernel: modes 2, 3 have size 1, r_min = 2 is clamped there
    rng = np.random.default_rng(2)
    Y = random_tucker((6, 4, 1, 1), (3, 2, 1, 1), rng)
    G = random_quadratic(Y.shape, rng).gradient(Y.to_tensor())
    Y1, info = tdlrt_step(Y, G, 0.1, 0.3, r_min=2)
    assert Y1.ranks[2:] == (1, 1)
    assert min(Y1.ranks[:2]) >= 2
    with pytest.raises(ValueError, match="r_min > r_max"):  # an explicit r_max below r_min is not
        tdlrt_step(Y, G, 0.1, 0.3, r_min=3, r_max=(6, 2, 1, 1))


@pytest.mark.parametrize("make", ["tucker", "linear", "matrix"])
def test_projector_answers_cannot_go_stale_when_the_caller_changes_arrays(make):
    rng = np.random.default_rng(3)
    if make == "tucker":
        layer = TuckerConv2d(random_tucker((4, 3, 3, 3), (2, 2, 2, 2), rng), padding=1)
        x = rng.standard_normal((2, 3, 5, 5))
    elif make == "linear":
        layer = LowRankLinear(random_tucker((5, 6), (2, 2), rng))
        x = rng.standard_normal((3, 6))
    else:
        layer = MatrixConv2d(random_tucker((4, 27), (2, 2), rng), kernel_size=3, padding=1)
        x = rng.standard_normal((2, 3, 5, 5))
    y = layer.forward(x)
    layer.backward(rng.standard_normal(y.shape))
    proj = layer.projector()
    G = layer.dense_gradient()
    d = len(G.shape)
    mats = [rng.standard_normal((n, 2)) for n in G.shape]

    def dense_route(ms):
        out = G
        for i, A in enumerate(ms):
            out = np.moveaxis(np.tensordot(A.T, out, axes=([1], [i])), 0, i)
        return out

    first = proj.project(mats)
    np.testing.assert_allclose(first, dense_route(mats), rtol=1e-10, atol=1e-12)  # two routes
    first[...] = 123.0  # the caller may change what it got back ...
    mats[0][...] = rng.standard_normal(mats[0].shape)  # ... and its own matrices, in place
    mats[1] *= -2.0
    again = proj.project(mats)
    np.testing.assert_allclose(again, dense_route(mats), rtol=1e-10, atol=1e-12)
    # the layer's own factors changed in place after the forward: not taken for the cached ones
    U0 = layer.weight.factors[0]
    own = [U0.copy()] + [None] * (d - 1)
    before = proj.project(own)
    U0[...] = -U0
    np.testing.assert_allclose(proj.project([U0] + [None] * (d - 1)), -before, rtol=1e-10, atol=1e-12)


def test_functional_tucker_conv_is_what_the_layer_runs():
    rng = np.random.default_rng(4)
    Y = random_tucker((5, 3, 3, 2), (3, 2, 2, 2), rng)
    b = rng.standard_normal(5)
    x = rng.standard_normal((2, 3, 7, 6))
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    layer = TuckerConv2d(Y, b, **kw)
    y_layer = layer.forward(x)
    y, cache = tucker_conv2d_forward(x, Y, b, **kw)
    np.testing.assert_array_equal(y, y_layer)
    dy = rng.standard_normal(y.shape)
    dx, db, proj = tucker_conv2d_backward(dy, cache)
    np.testing.assert_array_equal(dx, layer.backward(dy))
    np.testing.assert_array_equal(db, layer.grads["b"])
    np.testing.assert_array_equal(proj.project(list(Y.factors)), layer.projector().project(list(Y.factors)))
    # the bias is added once: without it y differs by exactly b
    y0, _ = tucker_conv2d_forward(x, Y, None, **kw)
    np.testing.assert_allclose(y - y0, np.broadcast_to(b.reshape(1, -1, 1, 1), y.shape), atol=1e-12)
    _, c0 = tucker_conv2d_forward(x, Y, None, **kw)
    assert tucker_conv2d_backward(dy, c0)[1] is None
    with pytest.raises(TypeError, match="order-4 Tucker"):
        tucker_conv2d_forward(x, random_tucker((5, 3), (2, 2), rng))
    with pytest.raises(ValueError, match="dy"):
        tucker_conv2d_backward(dy[:1], cache)
