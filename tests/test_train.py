"""Models, the training loop, checkpoints and the train CLI (issue 5), on small data."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from helpers import write_mnist_dir

from refdlrt.cli import main
from refdlrt.nn.layers import Conv2d, Linear
from refdlrt.nn.lowrank_layers import LowRankLinear, MatrixConv2d, TuckerConv2d
from refdlrt.nn.models import build_model, init_ranks, lenet5, lowrank_plan, vgg_small
from refdlrt.training.datasets import Dataset, load_embedded_mnist
from refdlrt.training.trainer import TrainConfig, Trainer, TrainingDiverged, learning_rate


@pytest.fixture(scope="module")
def small():
    """600 training and 200 test images of the embedded split (fast enough for CI)."""
    ds = load_embedded_mnist()
    return Dataset(ds.x_train[:600], ds.y_train[:600], ds.x_test[:200], ds.y_test[:200],
                   name="mnist-small", n_classes=10, source="embedded[:600]")


# --- models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, kinds",
    [
        ("dense", [Conv2d, Conv2d, Linear, Linear, Linear]),
        ("tdlrt", [Conv2d, TuckerConv2d, LowRankLinear, LowRankLinear, Linear]),
        ("tdlrt-fixed", [Conv2d, TuckerConv2d, LowRankLinear, LowRankLinear, Linear]),
        ("tucker-direct", [Conv2d, TuckerConv2d, LowRankLinear, LowRankLinear, Linear]),
        ("matrix-dlrt", [Conv2d, MatrixConv2d, LowRankLinear, LowRankLinear, Linear]),
    ],
)
def test_lenet5_layers_per_method(method, kinds):
    layers, plan = build_model(lenet5(), method, np.random.default_rng(0))
    weighted = [ly for ly in layers if type(ly) in (Conv2d, Linear, TuckerConv2d, LowRankLinear, MatrixConv2d)]
    assert [type(ly) for ly in weighted] == kinds
    assert plan == lowrank_plan(lenet5(), method)


def test_lenet5_forward_shape_and_vgg_small_shapes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    for specs in (lenet5(), vgg_small(widths=(4, 4, 8, 8))):
        layers, _ = build_model(specs, "tdlrt", rng)
        out = x
        for ly in layers:
            out = ly.forward(out, training=True)
        assert out.shape == (2, 10)
    assert [s.args["c_out"] for s in lenet5() if s.kind == "conv"] == [6, 16]
    assert [s.args["n_in"] for s in lenet5() if s.kind == "linear"] == [400, 120, 84]
    v32 = vgg_small(in_channels=3, input_size=32)
    assert [s.args["n_in"] for s in v32 if s.kind == "linear"][0] == 64 * 8 * 8


def test_init_ranks_fraction_and_compatibility():
    assert init_ranks((16, 6, 5, 5), 0.5) == (8, 3, 3, 3)
    assert init_ranks((120, 400), 0.5) == (60, 60)  # d = 2: equal ranks (r_i <= prod of others)
    for shape in [(16, 6, 5, 5), (10, 1, 3, 3), (7, 3)]:
        r = init_ranks(shape, 0.3)
        assert all(1 <= ri <= n for ri, n in zip(r, shape))
        assert all(ri <= math.prod(r) // ri for ri in r)
    with pytest.raises(ValueError, match="fraction"):
        init_ranks((4, 4), 0.0)


def test_explicit_ranks_and_unknown_layers():
    layers, _ = build_model(lenet5(), "tdlrt", np.random.default_rng(0), ranks={"conv2": (4, 3, 2, 2)})
    assert layers[3].weight.ranks == (4, 3, 2, 2)
    with pytest.raises(ValueError, match="not low-rank"):
        build_model(lenet5(), "tdlrt", np.random.default_rng(0), ranks={"conv1": (2, 1, 2, 2)})


# --- schedule, counts ----------------------------------------------------------------------


def test_learning_rate_schedules():
    cfg = TrainConfig(lr=0.1, epochs=4, schedule="cosine")
    assert learning_rate(cfg, 0, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cfg, 2, 0, 10) == pytest.approx(0.05)
    assert learning_rate(cfg, 3, 9, 10) == pytest.approx(0.05 * (1 + math.cos(math.pi * 39 / 40)))
    step = TrainConfig(lr=0.1, epochs=10, schedule="step", step_size=3, gamma=0.5)
    assert [learning_rate(step, e, 0, 5) for e in (0, 2, 3, 6)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert learning_rate(TrainConfig(lr=0.1, schedule="constant"), 7, 3, 5) == 0.1


def test_parameter_counts_match_their_definition(small):
    tr = Trainer(TrainConfig(method="tdlrt", epochs=1), small)
    c = tr.counts()
    dense = {"conv2": 16 * 6 * 25, "fc1": 120 * 400, "fc2": 84 * 120}
    ranks = tr.ranks()
    shapes = {"conv2": (16, 6, 5, 5), "fc1": (120, 400), "fc2": (84, 120)}
    lowrank = {k: sum(n * r for n, r in zip(shapes[k], ranks[k])) + math.prod(ranks[k]) for k in dense}
    assert c["lowrank_params"] == lowrank
    assert c["lowrank_param_fraction"] == pytest.approx(sum(lowrank.values()) / sum(dense.values()))
    conv1 = 6 * 1 * 25
    assert c["conv_compression"] == pytest.approx(1 - (conv1 + lowrank["conv2"]) / (conv1 + dense["conv2"]))


# --- training ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, lr, tau",
    [("dense", 0.05, 0.0), ("tdlrt", 0.05, 0.1), ("tdlrt-fixed", 0.05, 0.1), ("matrix-dlrt", 0.05, 0.2),
     ("tucker-direct", 0.01, 0.0)],  # direct factor training diverges at lr 0.05 (its known weakness)
)
def test_training_learns_and_keeps_rank_rules(small, method, lr, tau):
    tr = Trainer(TrainConfig(method=method, epochs=2, lr=lr, tau=tau, batch_size=32, schedule="constant"), small)
    before = tr.ranks()
    loss0, acc0 = tr.evaluate(tr.data.x_test, tr.data.y_test)
    tr.run_epoch()
    row = tr.run_epoch()
    # 38 steps on 600 images: every method must be far above chance (10 %) and the initial loss
    assert row["test_loss"] < 0.7 * loss0 and row["test_accuracy"] > max(acc0, 0.5)
    if method in ("tdlrt-fixed", "tucker-direct"):
        assert tr.ranks() == before
    if method in ("tdlrt", "matrix-dlrt"):
        assert tr.ranks() != before  # tau > 0 prunes
    if method == "dense":
        assert before == {} and row["lowrank_param_fraction"] == 1.0


def test_resume_is_bit_for_bit(small, tmp_path):
    cfg = dict(method="tdlrt", epochs=2, lr=0.05, tau=0.1, seed=3)
    a = Trainer(TrainConfig(**cfg), small)
    a.run_epoch(), a.run_epoch()
    b = Trainer(TrainConfig(**cfg), small)
    b.run_epoch()
    b.save(tmp_path / "ck.npz")
    c = Trainer.load(tmp_path / "ck.npz", small)
    c.run_epoch()
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in c.history]
    for la, lc in zip(a.layers, c.layers):
        for k in la.params:
            np.testing.assert_array_equal(la.params[k], lc.params[k])
        if hasattr(la, "weight"):
            np.testing.assert_array_equal(la.weight.core, lc.weight.core)
            for Ua, Uc in zip(la.weight.factors, lc.weight.factors):
                np.testing.assert_array_equal(Ua, Uc)
    assert a.rng.bit_generator.state == c.rng.bit_generator.state


def test_divergence_is_detected(small):
    tr = Trainer(TrainConfig(method="dense", epochs=1, lr=1e30, momentum=0.0), small)
    with pytest.raises(TrainingDiverged, match="NaN|inf"):
        tr.run_epoch()


@pytest.mark.parametrize(
    "field, value, match",
    [("method", "svd", "method"), ("tau", -1.0, "tau"), ("lr", 0.0, "lr"), ("momentum", 1.0, "momentum"),
     ("epochs", 0, "epochs"), ("model", "resnet", "model"), ("schedule", "exp", "schedule")],
)
def test_bad_config_raises(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value}).validate()


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory, small):
    """A small MNIST-format directory (train and t10k files) made from the embedded images."""
    return write_mnist_dir(tmp_path_factory.mktemp("mnist"), small.x_train[:300], small.y_train[:300],
                           small.x_test[:100], small.y_test[:100])


def test_cli_train_writes_the_run_folder(mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", mnist_dir, "--epochs", "1", "--tau", "0.2", "--out", str(out), "--no-progress"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("method", "test_accuracy", "train_loss", "ranks", "lowrank_param_fraction",
                "conv_compression", "seconds_per_epoch"):
        assert key in s
    assert s["method"] == "tdlrt" and 0.0 <= s["test_accuracy"] <= 1.0
    assert set(s["ranks"]) == {"conv2", "fc1", "fc2"}
    for f in ("history.json", "history.csv", "steps.csv", "loss_accuracy.png", "ranks.png",
              "params.png", "checkpoint.npz"):
        assert os.path.getsize(out / f) > 0, f
    assert "test accuracy" in capsys.readouterr().out


def test_cli_resume_continues_from_the_checkpoint(mnist_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", mnist_dir, "--method", "dense", "--no-progress", "--out", str(out)]
    assert main(args + ["--epochs", "1"]) == 0
    assert main(args + ["--resume", str(out / "checkpoint.npz"), "--epochs", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--tau", "-0.5"], "tau"),
        (["--lr", "0"], "lr"),
        (["--data", "/nonexistent/dir"], "nonexistent"),
        (["--ranks", "conv2=a,b"], "--ranks"),
        (["--ranks", "conv1=2,1,2,2"], "not low-rank"),
    ],
)
def test_cli_bad_arguments_give_a_message_not_a_traceback(argv, match, tmp_path, capsys):
    rc = main(["train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")] + argv)
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err


def test_cli_divergence_stops_with_a_message(mnist_dir, tmp_path, capsys):
    rc = main(["train", "--data", mnist_dir, "--method", "dense", "--lr", "1e30", "--momentum", "0",
               "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")])
    assert rc == 3 and "stopped" in capsys.readouterr().err


def test_float64_training_runs_in_float64(small):
    tr = Trainer(TrainConfig(method="tdlrt", epochs=1, dtype="float64", batch_size=64), small)
    row = tr.run_epoch()
    assert math.isfinite(row["train_loss"])
    for ly in tr.layers:
        for p in ly.params.values():
            assert p.dtype == np.float64
        if hasattr(ly, "weight"):
            assert ly.weight.core.dtype == np.float64


def test_per_layer_rank_bounds_and_compression(small):
    cfg = TrainConfig(method="tdlrt", epochs=1, tau=0.0, batch_size=300, layer_r_max={"fc1": (20, 30)})
    tr = Trainer(cfg, small)
    row = tr.run_epoch()
    # tau = 0 grows, r_max caps; a matrix has one rank, so (20, 30) is made compatible: (20, 20)
    assert tr.ranks()["fc1"] == [20, 20]
    assert tr.ranks()["fc2"][0] > 42  # the others grow freely
    for name, n in row["lowrank_params"].items():
        assert row["compression"][name] == pytest.approx(1 - n / tr.dense_reference[name])


def test_cli_layer_r_max(mnist_dir, tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--data", mnist_dir, "--epochs", "1", "--tau", "0", "--no-progress",
               "--layer-r-max", "fc2=9,9", "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["ranks"]["fc2"] == [9, 9]


def test_cli_resume_of_a_bad_checkpoint_gives_a_message(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz file")
    rc = main(["train", "--resume", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a refdlrt checkpoint" in err


def test_cli_resume_uses_the_checkpoint_data(mnist_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--method", "dense", "--no-progress", "--out", str(out)]
    assert main(args + ["--data", mnist_dir, "--epochs", "1"]) == 0
    assert main(args + ["--resume", str(out / "checkpoint.npz"), "--epochs", "2"]) == 0  # no --data
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["data"] == mnist_dir and s["epochs"] == 2


def test_bad_gamma_raises():
    with pytest.raises(ValueError, match="gamma"):
        TrainConfig(schedule="step", gamma=0.0).validate()


def test_warmup_and_finetune_epochs_run_at_fixed_rank(small):
    cfg = TrainConfig(method="tdlrt", epochs=3, tau=0.3, batch_size=100, warmup_epochs=1, finetune_epochs=1)
    tr = Trainer(cfg, small)
    start = tr.ranks()
    tr.run_epoch()
    assert tr.ranks() == start  # warm-up: no truncation
    tr.run_epoch()
    pruned = tr.ranks()
    assert pruned != start  # tau = 0.3 prunes once truncation starts
    tr.run_epoch()
    assert tr.ranks() == pruned  # fine-tuning: fixed rank
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig(epochs=2, warmup_epochs=2).validate()


def test_cli_conv_adaptive_modes_keep_the_spatial_ranks(mnist_dir, tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--data", mnist_dir, "--epochs", "1", "--tau", "0.3", "--no-progress",
               "--ranks", "conv2=8,3,5,4", "--conv-adaptive-modes", "0", "1", "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["ranks"]["conv2"][2:] == [5, 4]


@pytest.mark.parametrize("method, expected", [
    ("tdlrt", {"matrix_step": {2}, "tdlrt_step": {4}}),
    ("matrix-dlrt", {"matrix_step": {2}, "tdlrt_step": set()}),
    ("tdlrt-fixed", {"matrix_step": set(), "tdlrt_step": {2, 4}}),
])
def test_matrix_weights_take_the_matrix_step_when_rank_adaptive(small, monkeypatch, method, expected):
    """The rank-adaptive step of a d = 2 weight is matrix_step (pinned to tdlrt_step in
    tests/test_matrix_step.py); Tucker kernels and fixed-rank steps take tdlrt_step."""
    import refdlrt.training.trainer as trainer_mod

    seen = {"matrix_step": set(), "tdlrt_step": set()}
    for name in seen:
        real = getattr(trainer_mod, name)
        monkeypatch.setattr(trainer_mod, name, lambda Y, *a, _real=real, _name=name, **k:
                            seen[_name].add(Y.ndim) or _real(Y, *a, **k))
    tr = Trainer(TrainConfig(method=method, epochs=1, batch_size=100), small)
    tr.train_step(tr.data.x_train[:100].astype(np.float32), tr.data.y_train[:100], 0.05)
    assert seen == expected


def test_training_with_the_matrix_step_equals_training_with_tdlrt_step(small, monkeypatch):
    """Five steps of LeNet5 TDLRT: the same ranks and, to float32's tolerance, the same weights
    as with every step taken by tdlrt_step."""
    import refdlrt.training.trainer as trainer_mod
    from refdlrt.tolerances import tolerance

    def run():
        tr = Trainer(TrainConfig(method="tdlrt", epochs=1, batch_size=50, tau=0.2), small)
        for s in range(5):
            sl = slice(50 * s, 50 * (s + 1))
            tr.train_step(tr.data.x_train[sl].astype(np.float32), tr.data.y_train[sl], 0.05)
        return {ly.name: ly.weight for ly in tr.layers if hasattr(ly, "weight") and hasattr(ly.weight, "core")}

    ours = run()
    real = trainer_mod.tdlrt_step
    monkeypatch.setattr(trainer_mod, "matrix_step", lambda *a, **k: real(*a, diagnostics=False, **k))
    ref = run()
    assert {k: W.ranks for k, W in ours.items()} == {k: W.ranks for k, W in ref.items()}
    for k in ours:
        Wa, Wb = ours[k].to_tensor(), ref[k].to_tensor()
        # five float32 steps, each rounding the two routes differently (measured: fc1 2.3e-5)
        assert np.linalg.norm(Wa - Wb) <= tolerance(np.float32).rtol * np.linalg.norm(Wb), k


def test_a_non_square_matrix_core_takes_tdlrt_step_until_its_truncation_makes_it_square(small, monkeypatch):
    """Explicit ranks may start a linear layer's core non-square (fc1 = 10 x 20); matrix_step needs
    a square core (its Q_i is then square orthogonal), so that step is tdlrt_step's, whose
    compatible-ranks cut makes the core square; the next step is matrix_step's."""
    import refdlrt.training.trainer as trainer_mod

    seen = []
    for name in ("matrix_step", "tdlrt_step"):
        real = getattr(trainer_mod, name)
        monkeypatch.setattr(trainer_mod, name, lambda Y, *a, _real=real, _name=name, **k:
                            seen.append((_name, Y.ranks)) or _real(Y, *a, **k))
    tr = Trainer(TrainConfig(method="tdlrt", epochs=1, batch_size=100, ranks={"fc1": (10, 20)}), small)
    for _ in range(2):
        tr.train_step(tr.data.x_train[:100].astype(np.float32), tr.data.y_train[:100], 0.05)
    # per step: conv2, fc1, fc2 in that order
    assert seen[1] == ("tdlrt_step", (10, 20))
    name, ranks = seen[4]
    assert name == "matrix_step" and ranks[0] == ranks[1] <= 10
