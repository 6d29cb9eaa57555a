"""Numerics that fail loudly, and behaviours that no test pinned before (issue 12)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import cast_tucker
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import tucker_configs

from refdlrt.backend import fro
from refdlrt.dlrt.integrator import augment, k_step, tdlrt_step
from refdlrt.dlrt.problems import random_quadratic, random_tucker
from refdlrt.dlrt.projector import DenseGradient
from refdlrt.tensor.hosvd import tail_norms
from refdlrt.tensor.tucker import Tucker
from refdlrt.tolerances import tolerance
from refdlrt.training.datasets import Dataset, load_embedded_mnist
from refdlrt.training.trainer import TrainConfig, Trainer

# --- dtypes: one rule, as conv2d_forward's ------------------------------------------------


@pytest.mark.parametrize("g_dtype, match", [(np.float64, "dtypes differ"), (np.int64, "float32 or float64"),
                                           (np.float16, "float32 or float64")])
def test_step_refuses_mixed_and_integer_gradients(g_dtype, match):
    rng = np.random.default_rng(0)
    Y = cast_tucker(random_tucker((5, 4, 3), (2, 2, 2), rng), np.float32)
    G = (rng.standard_normal(Y.shape) * 3).astype(g_dtype)
    with pytest.raises(TypeError, match=match):
        tdlrt_step(Y, G, 0.1, 0.1)
    with pytest.raises(TypeError, match="dtypes differ"):
        tdlrt_step(Y, G.astype(np.float32), 0.1, 0.1, momentum=0.5, velocity=np.zeros(Y.ranks))


# --- magnitudes: scale first, never overflow, never a silent rank collapse -----------------


@given(cfg=tucker_configs(d_values=(2, 3, 4)),
       scale=st.sampled_from([1e-30, 1e-15, 1e-5, 1e5, 1e15, 1e30, 1e200]),
       tau=st.sampled_from([0.05, 0.2]))
@settings(max_examples=30)
def test_float64_step_is_scale_equivariant_at_extreme_magnitudes(cfg, scale, tau):
    """step(sY, sG) = s step(Y, G): the same ranks, the tensor scaled (the τ rule is relative)."""
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = random_tucker(shape, ranks, rng)
    G = random_quadratic(shape, rng).gradient(Y.to_tensor())
    Y1, i1 = tdlrt_step(Y, G, 0.3, tau)
    Ys, i_s = tdlrt_step(Tucker(Y.core * scale, Y.factors), G * scale, 0.3, tau)
    assert Ys.ranks == Y1.ranks
    assert math.isfinite(i_s.theta) and i_s.theta == pytest.approx(scale * i1.theta, rel=1e-9)
    np.testing.assert_allclose(Ys.to_tensor() / scale, Y1.to_tensor(), rtol=1e-9, atol=1e-12)


@given(cfg=tucker_configs(d_values=(3, 4)), scale=st.sampled_from([1e-15, 1e-5, 1e5, 1e15, 1e20]))
@settings(max_examples=20)
def test_float32_step_keeps_its_ranks_at_extreme_magnitudes(cfg, scale):
    """float32 up to 1e20 (where a plain sum of squares overflows to inf and the τ rule used to
    truncate everything to rank 1): the ranks of the unscaled step, the tensor scaled."""
    shape, ranks, seed = cfg
    rng = np.random.default_rng(seed)
    Y = cast_tucker(random_tucker(shape, ranks, rng), np.float32)
    G = rng.standard_normal(shape).astype(np.float32)
    Y1, _ = tdlrt_step(Y, G, 0.3, 0.1)
    Ys, info = tdlrt_step(Tucker(Y.core * np.float32(scale), Y.factors), G * np.float32(scale), 0.3, 0.1)
    assert math.isfinite(info.theta)
    assert Ys.ranks == Y1.ranks
    err = fro(Ys.to_tensor() / np.float32(scale) - Y1.to_tensor()) / fro(Y1.to_tensor())
    assert err < 1e-3  # float32 rounding through two SVDs of the same numbers at different scales


def test_a_float32_gradient_of_1e20_no_longer_collapses_the_rank():
    rng = np.random.default_rng(3)
    Y = cast_tucker(random_tucker((8, 6, 5), (3, 3, 3), rng), np.float32)
    G = rng.standard_normal(Y.shape).astype(np.float32)
    Y1, _ = tdlrt_step(Y, G, 0.5, 0.1)
    Y2, info = tdlrt_step(Y, G * np.float32(1e20), np.float32(0.5e-20), 0.1)
    assert Y2.ranks == Y1.ranks and Y2.ranks != (1, 1, 1) and math.isfinite(info.theta)


def test_norms_and_tails_do_not_overflow_or_underflow():
    big = np.full((10,), 1e20, np.float32)  # squares overflow float32
    assert fro(big) == pytest.approx(1e20 * math.sqrt(10), rel=1e-6)
    assert fro(np.full((4, 4), 1e-30, np.float32)) == pytest.approx(4e-30, rel=1e-6)  # squares underflow
    assert fro(np.full(3, 1e300)) == pytest.approx(1e300 * math.sqrt(3), rel=1e-12)
    assert math.isnan(fro(np.array([1.0, np.nan]))) and fro(np.array([1.0, np.inf])) == math.inf
    t = tail_norms(np.array([1e200, 1e200]))
    assert np.all(np.isfinite(t)) and t[0] == pytest.approx(math.sqrt(2) * 1e200)


def test_a_non_finite_intermediate_is_an_error_not_a_rank():
    rng = np.random.default_rng(4)
    Y = cast_tucker(random_tucker((5, 4, 3), (2, 2, 2), rng), np.float32)
    G = np.full(Y.shape, 3e38, np.float32)  # finite, but the step overflows float32
    with pytest.raises(FloatingPointError):
        tdlrt_step(Y, G, 10.0, 0.1)


# --- augmentation edge cases ----------------------------------------------------------------


@pytest.mark.parametrize("core", ["zero", "zero_slice"])
def test_augmentation_of_a_rank_deficient_core_still_adds_the_new_directions(core):
    rng = np.random.default_rng(5)
    Y = random_tucker((9, 8, 7), (3, 3, 3), rng)
    C = np.zeros_like(Y.core) if core == "zero" else Y.core.copy()
    if core == "zero_slice":
        C[:, :, 0] = 0.0  # Mat_2(C) has a zero row
    Y = Tucker(C, Y.factors)
    G = DenseGradient(rng.standard_normal(Y.shape))
    for i, U in enumerate(Y.factors):
        K, grad_K = k_step(Y.core, Y.factors, i, G, 0.1)
        U_hat, _ = augment(K, U, direction=grad_K)
        assert U_hat.shape[1] == min(2 * U.shape[1], U.shape[0]), (core, i)
        assert np.linalg.norm(U - U_hat @ (U_hat.T @ U)) < 1e-12  # range(U) kept
    Y1, info = tdlrt_step(Y, G.G, 0.1, 0.0)
    assert info.ranks_augmented == (6, 6, 6)


@pytest.mark.parametrize("scale", [1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e6, 1e8])
def test_float32_augmentation_keeps_new_directions_over_gradient_scales(scale):
    rng = np.random.default_rng(6)
    Y = cast_tucker(random_tucker((12, 10, 8), (3, 3, 2), rng), np.float32)
    G = (rng.standard_normal(Y.shape) * scale * fro(Y.core)).astype(np.float32)
    for lr in (1e-4, 0.1):
        Y1, info = tdlrt_step(Y, G, lr, 0.0)
        assert info.ranks_augmented == (6, 6, 4), (scale, lr)
        tol = tolerance(np.float32)
        assert info.lift_error <= 20 * tol.rtol * fro(Y.to_tensor()), (scale, lr, info.lift_error)


# --- training state ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    ds = load_embedded_mnist(n_train=200, n_test=100, seed=2)
    return Dataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test, name="tiny", n_classes=10, source="embedded")


def _snapshot(tr):
    out = {}
    for k, ly in enumerate(tr.layers):
        for name, p in ly.params.items():
            out[f"{k}/p/{name}"] = np.array(p)
        for name, s in getattr(ly, "state", {}).items():
            out[f"{k}/s/{name}"] = np.array(s)
        if hasattr(ly, "weight"):
            out[f"{k}/W"] = np.array(ly.weight.to_tensor())
    for key, v in tr.velocity.items():
        out[f"v/{key}"] = np.array(v)
    return out


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_vgg_small_with_batchnorm_resumes_bit_for_bit(tiny, tmp_path):
    cfg = dict(model="vgg_small", widths=(4, 4, 8, 8), method="tdlrt", epochs=2, batch_size=50, tau=0.2)
    ref = Trainer(TrainConfig(**cfg), tiny)
    ref.run_epoch()
    ref.run_epoch()
    tr = Trainer(TrainConfig(**cfg), tiny)
    tr.run_epoch()
    tr.save(tmp_path / "c.npz")
    back = Trainer.load(tmp_path / "c.npz", tiny)
    back.run_epoch()
    snap = _snapshot(back)
    assert any("/s/running_mean" in k for k in snap) and any("/s/running_var" in k for k in snap)
    _assert_same(snap, _snapshot(ref))


def test_evaluate_leaves_every_layer_state_unchanged(tiny):
    tr = Trainer(TrainConfig(model="vgg_small", widths=(4, 4, 8, 8), epochs=1, batch_size=50), tiny)
    tr.run_epoch()
    before = _snapshot(tr)
    tr.evaluate(tiny.x_test, tiny.y_test)
    tr.evaluate(tiny.x_train, tiny.y_train)
    _assert_same(_snapshot(tr), before)


def test_dense_heavy_ball_is_exactly_v_mu_v_plus_g(tiny, monkeypatch):
    """Two steps with a constant gradient g: p0 - λ g, then p0 - λ g - λ(μ g + g) = p0 - λ(2 + μ)g."""
    mu, lr = 0.5, 0.25
    tr = Trainer(TrainConfig(method="dense", epochs=1, momentum=mu, dtype="float64"), tiny)
    p0 = {(k, n): np.array(p) for k, ly in enumerate(tr.layers) for n, p in ly.params.items()}
    g = {key: np.random.default_rng(7).standard_normal(v.shape) for key, v in p0.items()}
    for k, ly in enumerate(tr.layers):
        def backward(d, ly=ly, k=k, **kw):  # the first layer is asked need_dx=False
            ly.grads = {n: g[(k, n)] for n in ly.params}
            return d
        monkeypatch.setattr(ly, "backward", backward)
    xb, yb = tiny.x_train[:8].astype(np.float64), tiny.y_train[:8]
    tr.train_step(xb, yb, lr)
    for (k, n), p in p0.items():
        np.testing.assert_allclose(tr.layers[k].params[n], p - lr * g[(k, n)], rtol=0, atol=1e-15)
    tr.train_step(xb, yb, lr)
    for (k, n), p in p0.items():
        # two roundings of the same sum: a few ulps of |p| + λ(2 + μ)|g|
        np.testing.assert_allclose(tr.layers[k].params[n], p - lr * (2 + mu) * g[(k, n)], rtol=0, atol=1e-14)


def test_the_first_layer_computes_no_input_gradient_and_the_step_is_unchanged(tiny, monkeypatch):
    """Nobody needs dL/dx of the network's input: the trainer asks the first conv for none
    (a third of its backward), and the step is the same, bit for bit, as with it."""
    import refdlrt.nn.layers as layers_module

    real = layers_module.conv2d_backward
    asked = []

    def recording(dy, cache, *, need_dx=True):
        asked.append(need_dx)
        return real(dy, cache, need_dx=need_dx)

    def always_dx(dy, cache, *, need_dx=True):
        return real(dy, cache, need_dx=True)

    cfg = TrainConfig(model="vgg_small", widths=(4, 4, 8, 8), method="tdlrt", epochs=1)
    xb, yb = tiny.x_train[:16].astype(np.float32), tiny.y_train[:16]
    runs = {}
    for name, fake in (("skip", recording), ("full", always_dx)):
        tr = Trainer(cfg, tiny)
        monkeypatch.setattr(layers_module, "conv2d_backward", fake)
        tr.train_step(xb, yb, 0.1)
        runs[name] = _snapshot(tr)
    assert asked == [False]  # conv1, the only dense conv (conv2-4 are Tucker layers)
    _assert_same(runs["skip"], runs["full"])
