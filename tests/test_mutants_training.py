"""Fast unit tests of ``refdlrt.training.trainer`` (issue 12's mutation run of the trainer).

The trainer's other tests train networks on real images and take seconds each; these build
networks on tiny random images (LeNet5 on 12 x 12 images ends in a 1 x 1 map, vgg_small gets
widths of 2 and 4 channels) so that every part of the trainer (the configuration's checks, the
schedule, one step, the heavy ball, the integrator's arguments, evaluation, the counts, an
epoch, checkpoints) is pinned by a test that runs in well under a second. Expected values are
computed here from the layers' own API or by hand, never read back from the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest

import refdlrt.training.trainer as trainer_mod
from refdlrt.dlrt.baselines import naive_factor_gradients
from refdlrt.dlrt.integrator import tdlrt_step
from refdlrt.dlrt.matrix_step import matrix_step
from refdlrt.nn.layers import Conv2d
from refdlrt.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from refdlrt.tensor.tucker import Tucker
from refdlrt.training.datasets import Dataset
from refdlrt.training.trainer import TrainConfig, Trainer, TrainingDiverged, learning_rate


def tiny(n_train=24, n_test=10, size=12, channels=1, seed=0):
    """Random images in [0, 1) and labels 0..9 (nothing to learn; only the arithmetic counts)."""
    rng = np.random.default_rng(seed)
    return Dataset(
        rng.random((n_train, channels, size, size), dtype=np.float32),
        rng.integers(0, 10, n_train).astype(np.int64),
        rng.random((n_test, channels, size, size), dtype=np.float32),
        rng.integers(0, 10, n_test).astype(np.int64),
        name="tiny", n_classes=10, source="random",
    )


def cfg(**kw):
    base = dict(model="lenet5", method="tdlrt", epochs=2, batch_size=8, lr=0.05, tau=0.1)
    base.update(kw)
    return TrainConfig(**base)


def batch(tr, n=8):
    xp = tr.xp
    return (xp.asarray(tr.data.x_train[:n], dtype=tr.dtype), xp.asarray(tr.data.y_train[:n]))


# --- TrainConfig.validate ---------------------------------------------------------------------

BAD = [
    ("model", "resnet", "model (--model): expected one of lenet5, vgg_small, got 'resnet'"),
    ("method", "sgd", "method (--method): expected one of dense, tdlrt, tdlrt-fixed, matrix-dlrt, "
                      "tucker-direct, got 'sgd'"),
    ("schedule", "linear", "schedule (--schedule): expected cosine, step or constant, got 'linear'"),
    ("epochs", 0, "epochs (--epochs): expected an integer >= 1, got 0"),
    ("epochs", 1.0, "epochs (--epochs): expected an integer >= 1, got 1.0"),
    ("batch_size", 0, "batch_size (--batch-size): expected an integer >= 1, got 0"),
    ("step_size", 0, "step_size (--step-size): expected an integer >= 1, got 0"),
    ("r_min", 0, "r_min (--r-min): expected an integer >= 1, got 0"),
    ("seed", -1, "seed (--seed): expected an integer >= 0, got -1"),
    ("seed", 0.5, "seed (--seed): expected an integer >= 0, got 0.5"),
    ("warmup_epochs", -1, "warmup_epochs (--warmup-epochs): expected an integer >= 0, got -1"),
    ("finetune_epochs", -1, "finetune_epochs (--finetune-epochs): expected an integer >= 0, got -1"),
    ("r_max", 1, "r_max (--r-max): expected an integer >= r_min = 2, got 1"),
    ("r_max", 2.5, "r_max (--r-max): expected an integer >= r_min = 2, got 2.5"),
    ("widths", (), "widths (--widths): expected channel widths >= 1, got []"),
    ("widths", (4, 0), "widths (--widths): expected channel widths >= 1, got [4, 0]"),
    ("widths", (4, 2.0), "widths (--widths): expected channel widths >= 1, got [4, 2.0]"),
    ("gamma", 0.0, "gamma (--gamma): expected a finite decay factor > 0, got 0.0"),
    ("gamma", math.inf, "gamma (--gamma): expected a finite decay factor > 0, got inf"),
    ("warmup_epochs", 15, "warmup_epochs (--warmup-epochs): expected 0 <= warmup_epochs < epochs = 15, "
                        "got 15"),
    ("finetune_epochs", 15, "finetune_epochs (--finetune-epochs): expected 0 <= finetune_epochs < epochs = "
                            "15, got 15"),
    ("lr", 0.0, "lr (--lr): expected a finite lr > 0, got 0.0"),
    ("lr", math.inf, "lr (--lr): expected a finite lr > 0, got inf"),
    ("momentum", 1.0, "momentum (--momentum): expected 0 <= momentum < 1, got 1.0"),
    ("momentum", -0.1, "momentum (--momentum): expected 0 <= momentum < 1, got -0.1"),
    ("tau", -0.1, "tau (--tau): expected a finite tau >= 0, got -0.1"),
    ("tau", math.inf, "tau (--tau): expected a finite tau >= 0, got inf"),
    ("init_rank", 0.0, "init_rank (--init-rank): expected 0 < init_rank <= 1, got 0.0"),
    ("init_rank", 1.5, "init_rank (--init-rank): expected 0 < init_rank <= 1, got 1.5"),
    ("dtype", "float16", "dtype (--dtype): expected float32 or float64, got 'float16'"),
    ("backend", "jax", "backend (--backend): expected numpy or cupy, got 'jax'"),
    ("train_size", 0, "train_size (--train-size): expected an integer >= 1 or none, got 0"),
    ("train_size", 2.0, "train_size (--train-size): expected an integer >= 1 or none, got 2.0"),
    ("val_fraction", 1.0, "val_fraction (--val-fraction): expected 0 <= val_fraction < 1, got 1.0"),
    ("val_fraction", -0.5, "val_fraction (--val-fraction): expected 0 <= val_fraction < 1, got -0.5"),
    ("val_fraction", "0.1", "val_fraction (--val-fraction): expected 0 <= val_fraction < 1, got '0.1'"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_every_bad_field_is_refused_with_its_exact_message(name, value, message):
    with pytest.raises(ValueError) as e:
        TrainConfig(**{name: value}).validate()
    assert str(e.value) == message


@pytest.mark.parametrize("name, value", [
    ("epochs", 1), ("batch_size", 1), ("step_size", 1), ("r_min", 1), ("seed", 0),
    ("warmup_epochs", 14), ("finetune_epochs", 14), ("r_max", 2), ("widths", (1,)),
    ("momentum", 0.0), ("tau", 0.0), ("init_rank", 1.0), ("train_size", 1), ("val_fraction", 0.0),
    ("val_fraction", 0), ("dtype", "float64"), ("backend", "numpy"), ("schedule", "step"),
    ("schedule", "constant"), ("model", "vgg_small"), ("method", "matrix-dlrt"), ("gamma", 1e-9),
])
def test_values_on_the_boundary_are_accepted(name, value):
    c = TrainConfig(**{name: value})
    assert c.validate() is c


# --- the schedule -----------------------------------------------------------------------------


def test_learning_rate_by_hand():
    c = TrainConfig(lr=0.4, epochs=4, schedule="cosine")
    # t = (epoch * steps + step) / (epochs * steps): 0, 1/4, 1/2, 7/8 of the run
    assert learning_rate(c, 0, 0, 10) == 0.4
    assert learning_rate(c, 1, 0, 10) == pytest.approx(0.2 * (1 + math.sqrt(0.5)), rel=1e-15)  # exact cos
    assert learning_rate(c, 1, 5, 10) == pytest.approx(0.2 * (1 + math.cos(math.pi * 15 / 40)), rel=1e-15)
    assert learning_rate(c, 2, 0, 10) == pytest.approx(0.2, rel=1e-15)  # cos(pi/2) is 6e-17, not 0
    c = TrainConfig(lr=0.4, schedule="step", step_size=3, gamma=0.5)
    assert [learning_rate(c, e, 7, 10) for e in (0, 2, 3, 5, 6, 9)] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.05]
    c = TrainConfig(lr=0.4, schedule="constant")
    assert learning_rate(c, 7, 3, 10) == 0.4


# --- construction -----------------------------------------------------------------------------


def test_construction_splits_standardises_and_counts_the_dense_reference():
    data = tiny(n_train=30)
    tr = Trainer(cfg(train_size=20, val_fraction=0.25, seed=3), data)
    assert tr.data.x_train.shape == (15, 1, 12, 12) and tr.data.x_val.shape == (5, 1, 12, 12)
    assert float(np.abs(tr.data.x_train.mean())) < 1e-6  # standardised (float32 mean of 2160 values)
    assert tr.dtype == np.float32 and tr.xp is np
    assert tr.epoch == 0 and tr.history == [] and tr.steps == [] and tr.velocity == {}
    assert tr.dense_reference == {"conv2": 16 * 6 * 25, "fc1": 120 * 16, "fc2": 84 * 120}
    again, other = Trainer(cfg(train_size=20, val_fraction=0.25, seed=3), data), Trainer(cfg(seed=4), data)
    assert tr.rng.bit_generator.state == again.rng.bit_generator.state != other.rng.bit_generator.state
    np.testing.assert_array_equal(tr.layers[0].params["w"], again.layers[0].params["w"])
    assert not np.array_equal(tr.layers[0].params["w"], other.layers[0].params["w"])


def test_vgg_small_takes_the_widths_and_the_image_geometry():
    tr = Trainer(cfg(model="vgg_small", widths=(2, 3, 4, 5), method="dense"), tiny(size=8, channels=3))
    convs = [ly for ly in tr.layers if isinstance(ly, Conv2d)]
    assert [tuple(ly.params["w"].shape) for ly in convs] == [(2, 3, 3, 3), (3, 2, 3, 3), (4, 3, 3, 3),
                                                             (5, 4, 3, 3)]
    assert tuple(tr.layers[-3].params["w"].shape) == (128, 5 * 2 * 2)
    assert tuple(tr.layers[-1].params["w"].shape) == (10, 128)


def test_unknown_layer_r_max_names_the_low_rank_layers():
    with pytest.raises(ValueError) as e:
        Trainer(cfg(layer_r_max={"fc9": 3, "conv7": 2}), tiny())
    assert str(e.value) == ("layer_r_max (--layer-r-max): no low-rank layer named conv7, fc9; the low-rank "
                            "layers of lenet5 / tdlrt are conv2, fc1, fc2")
    with pytest.raises(ValueError) as e:
        Trainer(cfg(method="dense", layer_r_max={"fc1": 3}), tiny())
    assert str(e.value).endswith("the low-rank layers of lenet5 / dense are none")


# --- one step ---------------------------------------------------------------------------------


def dense_part_of_a_step(tr, xb, yb, lr, velocity):
    """Forward, loss, backward through every layer and the heavy ball on the dense parameters,
    written out from the layers' API; ``velocity`` is updated in place. Returns (loss, logits)."""
    mu = tr.cfg.momentum
    x = xb
    for ly in tr.layers:
        x = ly.forward(x, training=True)
    loss, cache = softmax_cross_entropy(x, yb)
    d = softmax_cross_entropy_backward(cache)
    for ly in reversed(tr.layers):
        d = ly.backward(d)
    for k, ly in enumerate(tr.layers):
        for name, p in ly.params.items():
            g = ly.grads[name]
            v = g if (k, name) not in velocity else mu * velocity[(k, name)] + g
            velocity[(k, name)] = v
            ly.params[name] = p - lr * v
    return loss, x


def reference_step(tr, xb, yb, lr, velocity):
    """The step written out: the dense part, then one step per low-rank layer with the
    configuration's arguments (matrix_step for a matrix weight, tdlrt_step for a Tucker kernel;
    tests/test_matrix_step.py pins the two together). ``velocity`` is updated in place."""
    c = tr.cfg
    loss, x = dense_part_of_a_step(tr, xb, yb, lr, velocity)
    for k, ly in enumerate(tr.layers):
        if hasattr(ly, "weight"):
            kw = dict(r_min=c.r_min, r_max=c.layer_r_max.get(ly.name, c.r_max), momentum=c.momentum,
                      velocity=velocity.get((k, "core")))
            if ly.weight.ndim == 2 and ly.weight.ranks[0] == ly.weight.ranks[1]:
                Y, info = matrix_step(ly.weight, ly.projector(), lr, c.tau, **kw)
            else:
                Y, info = tdlrt_step(ly.weight, ly.projector(), lr, c.tau, fixed_rank=False,
                                     adaptive_modes=None, diagnostics=False, **kw)
            ly.weight = Y
            velocity[(k, "core")] = info.velocity
    return float(loss), float((x.argmax(axis=1) == yb).mean())


@pytest.mark.parametrize("model", ["lenet5", "vgg_small"])
def test_two_steps_equal_the_step_written_out_bit_for_bit(model):
    c = cfg(model=model, widths=(2, 2, 4, 4), momentum=0.5, layer_r_max={"fc1": 5}, r_max=6)
    data = tiny(size=12 if model == "lenet5" else 8)
    a, b = Trainer(c, data), Trainer(c, data)
    xb, yb = batch(a)
    vel = {}
    for lr in (0.05, 0.03):
        got = a.train_step(xb, yb, lr)
        want = reference_step(b, xb, yb, lr, vel)
        assert got == want
    assert set(a.velocity) == set(vel)
    for key in vel:
        np.testing.assert_array_equal(a.velocity[key], vel[key])
    for la, lb in zip(a.layers, b.layers):
        for name in la.params:
            np.testing.assert_array_equal(la.params[name], lb.params[name])
        for name in la.state:
            np.testing.assert_array_equal(la.state[name], lb.state[name])
        if hasattr(la, "weight"):
            np.testing.assert_array_equal(la.weight.to_tensor(), lb.weight.to_tensor())
            assert la.weight.ranks == lb.weight.ranks
    assert a.ranks()["fc1"] == [min(5, r) for r in a.ranks()["fc1"]]


def test_heavy_ball_two_constant_gradients_give_p0_minus_lr_2_plus_mu_g():
    tr = Trainer(cfg(method="dense", momentum=0.25), tiny())
    g = np.full(3, 0.5)
    p0 = np.array([1.0, 2.0, 3.0])
    p = p0
    for _ in range(2):
        p = p - 0.5 * tr._heavy_ball("k", g, 0.25)
    np.testing.assert_array_equal(p, p0 - 0.5 * (2 + 0.25) * g)  # exact in binary
    np.testing.assert_array_equal(tr.velocity["k"], (1 + 0.25) * g)


def test_without_momentum_nothing_is_kept():
    tr = Trainer(cfg(momentum=0.0), tiny())
    g = np.ones(2)
    assert tr._heavy_ball("k", g, 0.0) is g
    xb, yb = batch(tr)
    tr.train_step(xb, yb, 0.05)
    assert tr.velocity == {}


def test_the_first_convolution_computes_no_input_gradient(monkeypatch):
    tr = Trainer(cfg(method="dense"), tiny())
    calls = []
    for ly in tr.layers:
        orig = ly.backward

        def spy(d, *a, _orig=orig, _ly=ly, **kw):
            calls.append((_ly, kw.get("need_dx", True)))
            return _orig(d, *a, **kw)

        monkeypatch.setattr(ly, "backward", spy)
    xb, yb = batch(tr)
    tr.train_step(xb, yb, 0.05)
    assert [c[0] for c in calls] == list(reversed(tr.layers))
    assert [c[1] for c in calls] == [True] * (len(tr.layers) - 1) + [False]


def test_a_non_convolutional_first_layer_gets_the_plain_backward():
    tr = Trainer(cfg(method="dense"), tiny())
    seen = []

    class First:
        params, grads, state = {}, {}, {}
        name = "first"

        def forward(self, x, training):
            return x

        def backward(self, d):  # no need_dx keyword: a TypeError if the trainer passed one
            seen.append(d.shape)
            return d

    tr.layers = [First()] + tr.layers
    xb, yb = batch(tr)
    tr.train_step(xb, yb, 0.05)
    assert seen == [(8, 1, 12, 12)]


class Spy:
    """Records the arguments and results of tdlrt_step (and of matrix_step, the d = 2 step, with
    ``step="matrix_step"``) in one list, in call order (the real steps run)."""

    def __init__(self):
        self.calls = []

    def __call__(self, Y, grad, lr, tau, **kw):
        out = tdlrt_step(Y, grad, lr, tau, **kw)
        self.calls.append(dict(Y=Y, lr=lr, tau=tau, out=out, step="tdlrt_step", **kw))
        return out

    def matrix_step(self, Y, grad, lr, tau, **kw):
        out = matrix_step(Y, grad, lr, tau, **kw)
        self.calls.append(dict(Y=Y, lr=lr, tau=tau, out=out, step="matrix_step", **kw))
        return out


@pytest.mark.parametrize("method, warmup, finetune, fixed_by_epoch", [
    ("tdlrt", 0, 0, [False, False, False]),
    ("tdlrt-fixed", 0, 0, [True, True, True]),
    ("tdlrt", 1, 0, [True, False, False]),
    ("tdlrt", 0, 1, [False, False, True]),
    ("tdlrt", 1, 1, [True, False, True]),
])
def test_integrator_arguments_per_layer_and_epoch(monkeypatch, method, warmup, finetune, fixed_by_epoch):
    spy = Spy()
    monkeypatch.setattr(trainer_mod, "tdlrt_step", spy)
    monkeypatch.setattr(trainer_mod, "matrix_step", spy.matrix_step)
    c = cfg(method=method, epochs=3, warmup_epochs=warmup, finetune_epochs=finetune, r_min=3, r_max=7,
            layer_r_max={"fc2": (4, 5)}, conv_adaptive_modes=(0, 1), momentum=0.5, tau=0.15)
    tr = Trainer(c, tiny())
    xb, yb = batch(tr)
    previous = []
    for epoch in range(3):
        tr.epoch = epoch
        spy.calls.clear()
        tr.train_step(xb, yb, 0.07)
        names = [ly.name for ly in tr.layers if hasattr(ly, "weight")]
        assert names == ["conv2", "fc1", "fc2"] and len(spy.calls) == 3
        for call, name in zip(spy.calls, names):
            assert call["lr"] == 0.07 and call["tau"] == 0.15 and call["r_min"] == 3
            assert call["r_max"] == ((4, 5) if name == "fc2" else 7)
            assert call["momentum"] == 0.5
            if name != "conv2" and not fixed_by_epoch[epoch]:  # a rank-adaptive matrix step
                assert call["step"] == "matrix_step"
                assert set(call) == {"Y", "lr", "tau", "out", "step", "r_min", "r_max", "momentum", "velocity"}
                continue
            assert call["step"] == "tdlrt_step"
            assert call["fixed_rank"] is fixed_by_epoch[epoch]
            assert call["adaptive_modes"] == ((0, 1) if name == "conv2" else None)
            assert call["diagnostics"] is False
        for k, ly in enumerate(tr.layers):
            if hasattr(ly, "weight"):
                call = spy.calls[names.index(ly.name)]
                assert ly.weight is call["out"][0]
                assert tr.velocity[(k, "core")] is call["out"][1].velocity
        if epoch:
            for call, old in zip(spy.calls, previous):
                assert call["velocity"] is old["out"][1].velocity
        else:
            assert all(call["velocity"] is None for call in spy.calls)
        previous = list(spy.calls)


def test_tucker_direct_is_heavy_ball_on_the_core_and_every_factor():
    c = cfg(method="tucker-direct", momentum=0.5)
    data = tiny()
    a, b = Trainer(c, data), Trainer(c, data)
    xb, yb = batch(a)
    vel = {}
    for lr in (0.05, 0.02):
        a.train_step(xb, yb, lr)
        dense_part_of_a_step(b, xb, yb, lr, vel)
        for k, ly in enumerate(b.layers):
            if hasattr(ly, "weight"):
                W = ly.weight
                gC, gUs = naive_factor_gradients(W.core, W.factors, ly.projector())
                new = []
                for key, x0, g in [("core", W.core, gC)] + [(f"U{i}", U, g) for i, (U, g) in
                                                            enumerate(zip(W.factors, gUs))]:
                    v = g if (k, key) not in vel else 0.5 * vel[(k, key)] + g
                    vel[(k, key)] = v
                    new.append(x0 - lr * v)
                ly.weight = Tucker(new[0], tuple(new[1:]))
    assert set(a.velocity) == set(vel)
    for la, lb in zip(a.layers, b.layers):
        if hasattr(la, "weight"):
            np.testing.assert_array_equal(la.weight.core, lb.weight.core)
            for Ua, Ub in zip(la.weight.factors, lb.weight.factors):
                np.testing.assert_array_equal(Ua, Ub)
        for name in la.params:
            np.testing.assert_array_equal(la.params[name], lb.params[name])


def test_a_non_finite_loss_stops_with_the_epoch_in_the_message():
    tr = Trainer(cfg(method="dense"), tiny())
    tr.epoch = 4
    xb, yb = batch(tr)
    tr.layers[0].params["w"] = tr.layers[0].params["w"] * np.float32(np.nan)
    with pytest.raises(TrainingDiverged) as e:
        tr.train_step(xb, yb, 0.05)
    assert str(e.value) == "the loss became NaN/Inf (nan) in epoch 5"


def test_a_refused_gradient_stops_with_the_layer_and_epoch(monkeypatch):
    def refuse(*a, **kw):
        raise FloatingPointError("planted")

    monkeypatch.setattr(trainer_mod, "tdlrt_step", refuse)
    tr = Trainer(cfg(), tiny())
    tr.epoch = 2
    xb, yb = batch(tr)
    with pytest.raises(TrainingDiverged) as e:
        tr.train_step(xb, yb, 0.05)
    assert str(e.value) == "layer conv2, epoch 3: planted"
    assert isinstance(e.value.__cause__, FloatingPointError)


# --- evaluation and counts --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evaluate_is_the_size_weighted_mean_over_uneven_batches(dtype):
    tr = Trainer(cfg(dtype=dtype, method="dense"), tiny(n_test=10))
    x, y = tr.data.x_test, tr.data.y_test
    loss, acc = tr.evaluate(x, y, batch_size=4)  # batches of 4, 4, 2
    logits = x.astype(dtype)
    for ly in tr.layers:
        logits = ly.forward(logits, training=False)
    assert logits.dtype == np.dtype(dtype)
    losses = [float(softmax_cross_entropy(logits[i:i + 4], y[i:i + 4])[0]) for i in (0, 4, 8)]
    want = (losses[0] * 4 + losses[1] * 4 + losses[2] * 2) / 10
    tol = 1e-6 if dtype == "float32" else 1e-14  # one batch of 10 vs three: float rounding only
    assert loss == pytest.approx(want, rel=tol)
    assert acc == int((logits.argmax(axis=1) == y).sum()) / 10
    assert tr.evaluate(x, y) == pytest.approx((float(softmax_cross_entropy(logits, y)[0]), acc), rel=tol)


def test_evaluate_counts_correct_predictions_per_batch():
    tr = Trainer(cfg(method="dense"), tiny(n_test=10))
    x = tr.data.x_test
    logits = x
    for ly in tr.layers:
        logits = ly.forward(logits, training=False)
    pred = logits.argmax(axis=1)
    y = pred.copy()
    y[[1, 6, 9]] = (y[[1, 6, 9]] + 1) % 10  # exactly 7 of 10 right
    assert tr.evaluate(x, y, batch_size=3)[1] == 0.7


def test_ranks_and_counts_by_hand():
    tr = Trainer(cfg(ranks={"conv2": (4, 3, 2, 5), "fc1": (7, 6), "fc2": (5, 4)}), tiny())
    assert tr.ranks() == {"conv2": [4, 3, 2, 5], "fc1": [7, 6], "fc2": [5, 4]}
    n = {"conv2": 4 * 3 * 2 * 5 + 16 * 4 + 6 * 3 + 5 * 2 + 5 * 5, "fc1": 7 * 6 + 120 * 7 + 16 * 6,
         "fc2": 5 * 4 + 84 * 5 + 120 * 4}
    dense = {"conv2": 2400, "fc1": 1920, "fc2": 10080}
    got = tr.counts()
    assert got["lowrank_params"] == n
    assert got["compression"] == {k: 1.0 - n[k] / dense[k] for k in n}
    assert got["lowrank_param_fraction"] == sum(n.values()) / sum(dense.values())
    assert got["conv_compression"] == 1.0 - (150 + n["conv2"]) / (150 + 2400)  # conv1 stays dense
    d = Trainer(cfg(method="dense"), tiny()).counts()
    assert d == {"lowrank_params": {}, "compression": {}, "lowrank_param_fraction": 1.0,
                 "conv_compression": 0.0}


def test_check_finite_names_the_layer_for_a_param_a_core_or_a_factor():
    for where in ("param", "core", "factor"):
        tr = Trainer(cfg(), tiny())
        tr.epoch = 1
        ly = tr.layers[3] if where != "param" else tr.layers[0]
        assert ly.name == ("conv2" if where != "param" else "conv1")
        if where == "param":
            ly.params["b"] = ly.params["b"] + np.float32(np.inf)
        else:
            core, Us = ly.weight.core.copy(), list(ly.weight.factors)
            if where == "core":
                core[0, 0, 0, 0] = np.nan
            else:
                Us[3] = Us[3].copy()
                Us[3][0, 0] = np.nan
            ly._weight = Tucker(core, tuple(Us))  # bypass the orthonormality check of the setter
        with pytest.raises(TrainingDiverged) as e:
            tr._check_finite()
        assert str(e.value) == f"a parameter of layer {ly.name} became NaN/Inf in epoch 2"
    Trainer(cfg(), tiny())._check_finite()  # a healthy network passes


# --- one epoch --------------------------------------------------------------------------------


class Progress:
    def __init__(self):
        self.updates, self.postfix = [], []

    def update(self, n):
        self.updates.append(n)

    def set_postfix(self, **kw):
        self.postfix.append(kw)


def test_an_epoch_steps_in_the_rngs_order_and_records_every_step():
    c = cfg(batch_size=10, val_fraction=0.2, lr=0.08)
    data = tiny(n_train=30)
    tr, ref = Trainer(c, data), Trainer(c, data)
    order = ref.rng.permutation(24)  # 24 training images after the holdout: batches 10, 10, 4
    vel, losses, accs = {}, [], []
    for j, start in enumerate((0, 10, 20)):
        idx = order[start:start + 10]
        lr = learning_rate(c, 0, j, 3)
        loss, acc = reference_step(ref, ref.data.x_train[idx], ref.data.y_train[idx], lr, vel)
        losses.append(loss)
        accs.append(acc)
    prog = Progress()
    row = tr.run_epoch(prog)
    assert [s["step"] for s in tr.steps] == [0, 1, 2] and {s["epoch"] for s in tr.steps} == {0}
    assert [s["loss"] for s in tr.steps] == losses
    assert [s["lr"] for s in tr.steps] == [learning_rate(c, 0, j, 3) for j in range(3)]
    assert all(s["seconds"] > 0 for s in tr.steps)
    assert tr.steps[-1]["ranks"] == tr.ranks() == ref.ranks()
    assert prog.updates == [1, 1, 1] and prog.postfix == [dict(loss=f"{v:.3f}") for v in losses]
    assert tr.epoch == 1 and tr.history == [row]
    test_loss, test_acc = ref.evaluate(ref.data.x_test, ref.data.y_test)
    val_loss, val_acc = ref.evaluate(ref.data.x_val, ref.data.y_val)
    want = dict(epoch=1, lr=learning_rate(c, 0, 2, 3), train_loss=float(np.mean(losses)),
                train_accuracy=float(np.mean(accs)), val_loss=val_loss, val_accuracy=val_acc,
                test_loss=test_loss, test_accuracy=test_acc, ranks=ref.ranks(), **ref.counts())
    seconds = row.pop("seconds")
    assert row == want and list(row) == list(want)
    assert 0 < seconds < 60
    tr.run_epoch()  # without a progress bar; the second epoch is numbered 2
    assert tr.history[-1]["epoch"] == 2 and tr.steps[-1]["epoch"] == 1 and len(tr.steps) == 6


def test_an_epoch_without_validation_reports_none():
    tr = Trainer(cfg(method="dense", batch_size=24), tiny())
    row = tr.run_epoch()
    assert "val_loss" not in row and "val_accuracy" not in row and len(tr.steps) == 1


def test_an_epoch_that_ends_non_finite_is_stopped(monkeypatch):
    tr = Trainer(cfg(method="dense", batch_size=24), tiny())

    def poison(xb, yb, lr):
        tr.layers[-1].params["b"] = tr.layers[-1].params["b"] * np.float32(np.nan)
        return 1.0, 0.5

    monkeypatch.setattr(tr, "train_step", poison)
    with pytest.raises(TrainingDiverged, match="layer fc3 became NaN/Inf in epoch 1"):
        tr.run_epoch()
    assert tr.history == []


# --- checkpoints ------------------------------------------------------------------------------


def trained(model="vgg_small", method="tdlrt", **kw):
    c = cfg(model=model, method=method, widths=(2, 2, 4, 4), momentum=0.5, **kw)
    tr = Trainer(c, tiny(size=8 if model == "vgg_small" else 12))
    xb, yb = batch(tr)
    tr.train_step(xb, yb, 0.05)
    tr.epoch = 1
    tr.history = [dict(epoch=1, note="x")]
    tr.steps = [dict(step=0)]
    return tr


@pytest.mark.parametrize("method", ["tdlrt", "tucker-direct", "dense"])
def test_save_writes_every_array_and_load_restores_them(tmp_path, method):
    tr = trained(method=method)
    path = str(tmp_path / "ck.npz")
    tr.save(path)
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]  # the temporary file was renamed
    with np.load(path) as z:
        keys = set(z.files)
        meta = json.loads(str(z["meta"]))
    want = {"meta"}
    for k, ly in enumerate(tr.layers):
        want |= {f"layer{k}/param/{n}" for n in ly.params} | {f"layer{k}/state/{n}" for n in ly.state}
        if hasattr(ly, "weight"):
            want |= {f"layer{k}/core"} | {f"layer{k}/factor{i}" for i in range(ly.weight.ndim)}
    want |= {f"velocity/{k}/{n}" for k, n in tr.velocity}
    assert keys == want
    assert meta == dict(config=json.loads(json.dumps(dataclasses.asdict(tr.cfg))), epoch=1,
                        history=[dict(epoch=1, note="x")], steps=[dict(step=0)],
                        rng=json.loads(json.dumps(tr.rng.bit_generator.state)))
    back = Trainer.load(path, tiny(size=8))
    assert back.cfg == tr.cfg and back.epoch == 1 and back.history == tr.history and back.steps == tr.steps
    assert back.rng.bit_generator.state == tr.rng.bit_generator.state
    assert set(back.velocity) == set(tr.velocity)
    for key, v in tr.velocity.items():
        assert back.velocity[key].dtype == v.dtype
        np.testing.assert_array_equal(back.velocity[key], v)
    for la, lb in zip(tr.layers, back.layers):
        for group in ("params", "state"):
            for n, a in getattr(la, group).items():
                np.testing.assert_array_equal(getattr(lb, group)[n], a)
        if hasattr(la, "weight"):
            np.testing.assert_array_equal(lb.weight.core, la.weight.core)
            for Ua, Ub in zip(la.weight.factors, lb.weight.factors):
                np.testing.assert_array_equal(Ub, Ua)


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = str(tmp_path / "ck.npz")
    tr = trained()
    tr.save(path)
    tr.epoch = 2
    tr.save(path)
    assert Trainer.read_meta(path)["epoch"] == 2 and sorted(os.listdir(tmp_path)) == ["ck.npz"]


def edited(tmp_path, change):
    """A saved checkpoint with its arrays changed by ``change(arrays)``; returns its path."""
    path = str(tmp_path / "ck.npz")
    trained().save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **arrays)
    return bad


def meta_edit(**kw):
    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        for k, v in kw.items():
            if k.startswith("config_"):
                meta["config"][k[7:]] = v
            elif v is None:
                del meta[k]
            else:
                meta[k] = v
        arrays["meta"] = np.array(json.dumps(meta))
    return change


LOAD_ERRORS = [
    (lambda a: a.pop("layer0/param/w"), "missing array 'layer0/param/w' (damaged, or written for another model)"),
    (lambda a: a.pop("layer1/state/running_mean"),
     "missing array 'layer1/state/running_mean' (damaged, or written for another model)"),
    (lambda a: a.update({"layer0/param/b": np.zeros(3, np.float32)}),
     "array 'layer0/param/b' has shape (3,), the model expects (2,)"),
    (lambda a: a.update({"layer0/param/b": np.zeros(2, np.float64)}),
     "array 'layer0/param/b' has dtype float64, the model expects float32"),
    (lambda a: a.pop("layer3/core"), "missing array 'layer3/core'"),
    (lambda a: a.pop("layer3/factor2"),
     "missing array 'layer3/factor2' (damaged, or written for another model)"),
    (lambda a: a.update({"layer3/factor0": np.ones_like(a["layer3/factor0"])}),
     "layer conv2: TuckerConv2d: weight: "),
    (meta_edit(epoch=-1), "epoch -1 is not a count of epochs"),
    (meta_edit(epoch=1.5), "epoch 1.5 is not a count of epochs"),
    (meta_edit(config_colour="red"), "its configuration does not fit this refdlrt ("),
    (meta_edit(rng=None), "its metadata is missing or damaged ('config, epoch, history, steps, rng'); "
                          "not a refdlrt checkpoint"),
    (lambda a: a.pop("meta"), "its metadata is missing or damaged ('meta'); not a refdlrt checkpoint"),
    (lambda a: a.update({"meta": np.array("{not json")}), "its metadata is missing or damaged (Expecting"),
]


@pytest.mark.parametrize("change, message", LOAD_ERRORS)
def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path, change, message):
    bad = edited(tmp_path, change)
    with pytest.raises(ValueError) as e:
        Trainer.load(bad, tiny(size=8))
    assert str(e.value).startswith(f"checkpoint {bad}: {message}")
    assert "\n" not in str(e.value) and e.value.__cause__ is None


def test_the_layer_numbers_in_the_load_errors_are_the_layers_own():
    tr = trained()
    kinds = {k: type(ly).__name__ for k, ly in enumerate(tr.layers)}
    assert kinds[0] == "Conv2d" and kinds[1] == "BatchNorm2d" and kinds[3] == "TuckerConv2d"


def test_a_missing_or_garbage_file_is_named(tmp_path):
    missing = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError) as e:
        Trainer.load(missing, tiny())
    assert str(e.value) == f"checkpoint {missing}: no such file"
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError) as e:
        Trainer.read_meta(str(junk))
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {junk}: not a refdlrt checkpoint (expected an .npz written by "
                          f"Trainer.save): ")
    assert "allow_pickle" not in msg and e.value.__cause__ is None
    assert not re.search(r"checkpoint .*: .*: .*: ", msg.split("Trainer.save): ")[1])


# --- survivors of the first mutation run ------------------------------------------------------


def test_cupy_is_a_valid_backend_name():
    c = TrainConfig(backend="cupy")
    assert c.validate() is c  # only building a Trainer needs CuPy itself


def test_the_validation_split_is_drawn_with_the_runs_seed():
    from refdlrt.training.datasets import holdout

    data = tiny(n_train=30)
    tr = Trainer(cfg(val_fraction=0.2, seed=5), data)
    want = holdout(data, val_fraction=0.2, seed=5)
    assert not np.array_equal(want.y_val, holdout(data, val_fraction=0.2, seed=0).y_val)
    assert np.array_equal(tr.data.y_val, want.y_val) and np.array_equal(tr.data.y_train, want.y_train)


def test_non_square_images_are_refused_with_a_message():
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((4, 1, 12, 16), dtype=np.float32), np.zeros(4, np.int64),
                   rng.random((2, 1, 12, 16), dtype=np.float32), np.zeros(2, np.int64),
                   name="wide", n_classes=10, source="random")
    with pytest.raises(ValueError) as e:
        Trainer(cfg(), data)
    assert str(e.value) == ("data: expected square images (the models take input_size x input_size), "
                            "got 12 x 16 images in wide")


def test_the_classifier_has_one_output_per_class_and_init_rank_is_the_configs():
    data = tiny()
    three = Dataset(data.x_train, data.y_train % 3, data.x_test, data.y_test % 3, name="three",
                    n_classes=3, source="random")
    tr = Trainer(cfg(method="dense"), three)
    assert tuple(tr.layers[-1].params["w"].shape) == (3, 84)
    full = Trainer(cfg(init_rank=1.0), data).ranks()
    half = Trainer(cfg(init_rank=0.5), data).ranks()
    assert full["fc1"] == [16, 16] and full["fc2"] == [84, 84]  # min(n, m) of 120 x 16 and 84 x 120
    assert half["fc2"] == [42, 42]


def test_evaluate_uses_batches_of_1000_by_default_and_eval_mode(monkeypatch):
    tr = Trainer(cfg(model="vgg_small", widths=(2, 2, 4, 4), method="dense"), tiny(size=8, n_test=1001))
    before = {k: {n: a.copy() for n, a in ly.state.items()} for k, ly in enumerate(tr.layers)}
    seen = []
    forward = tr.forward

    def spy(x, training):
        seen.append((x.shape[0], training))
        return forward(x, training)

    monkeypatch.setattr(tr, "forward", spy)
    loss, acc = tr.evaluate(tr.data.x_test, tr.data.y_test)
    assert seen == [(1000, False), (1, False)]
    for k, ly in enumerate(tr.layers):  # batchnorm running statistics untouched
        for n, a in ly.state.items():
            np.testing.assert_array_equal(a, before[k][n])


def test_check_finite_covers_the_bias_of_a_low_rank_layer():
    tr = Trainer(cfg(), tiny())
    ly = tr.layers[3]
    ly.params["b"] = ly.params["b"] + np.float32(np.nan)
    with pytest.raises(TrainingDiverged, match="^a parameter of layer conv2 became NaN/Inf in epoch 1$"):
        tr._check_finite()


def test_a_float64_epoch_trains_in_float64_and_counts_time_and_epochs():
    tr = Trainer(cfg(method="dense", dtype="float64", batch_size=12), tiny())
    seen = []
    step = tr.train_step

    def spy(xb, yb, lr):
        seen.append(xb.dtype)
        return step(xb, yb, lr)

    tr.train_step = spy
    tr.run_epoch()
    tr.run_epoch()
    assert seen == [np.float64] * 4 and tr.epoch == 2
    assert all(0 < s["seconds"] < 60 for s in tr.steps)
    assert tr.layers[0].params["w"].dtype == np.float64


def test_a_checkpoint_at_epoch_0_loads(tmp_path):
    tr = trained()
    tr.epoch = 0
    path = str(tmp_path / "ck.npz")
    tr.save(path)
    assert Trainer.load(path, tiny(size=8)).epoch == 0


def test_a_garbage_file_message_names_the_file_once(tmp_path):
    folder = tmp_path / "a: b c"  # a colon and a space in the folder's name
    folder.mkdir()
    junk = folder / "junk.npz"
    junk.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ValueError) as e:
        Trainer.read_meta(str(junk))
    head = f"checkpoint {junk}: not a refdlrt checkpoint (expected an .npz written by Trainer.save): "
    assert str(e.value).startswith(head + "not a readable .npz of plain arrays (")
    assert str(e.value).endswith(")") and str(e.value).count(str(junk)) == 1


def test_a_network_without_convolutions_reports_no_conv_compression():
    tr = Trainer(cfg(), tiny())
    tr.specs = tuple(dataclasses.replace(s, kind="other") if s.kind == "conv" else s for s in tr.specs)
    assert tr.counts()["conv_compression"] == 0.0  # no conv weights: nothing compressed, no 0 / 0


@pytest.mark.parametrize("method, k_form, orthonormal", [("tdlrt", "auto", True),
                                                         ("tucker-direct", False, False)])
def test_tucker_direct_layers_take_neither_the_manifold_check_nor_the_k_form(method, k_form, orthonormal):
    """The tucker-direct baseline takes no K-steps, so its Tucker layers run without the K-form
    (whose convolutions only the K-steps use) and accept factors off the manifold."""
    from refdlrt.nn.lowrank_layers import TuckerConv2d
    from refdlrt.nn.models import build_model, vgg_small

    layers, _ = build_model(vgg_small(), method, np.random.default_rng(0))
    tucker = [ly for ly in layers if isinstance(ly, TuckerConv2d)]
    assert len(tucker) == 3
    assert all(ly.k_form == k_form and ly.orthonormal == orthonormal for ly in tucker)
