"""Runs that never lose data, a CLI that never answers with a traceback (issue 12).

Interruptions (SIGINT, SIGKILL, also during a checkpoint write) are followed by a resume whose
final parameters equal an uninterrupted run's bit for bit; a full disk and unwritable folders
are simulated; every bad input is a one-line message with a non-zero exit status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import write_mnist_dir

from refdlrt.cli import main
from refdlrt.training.runs import INCOMPLETE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["train", "--method", "tdlrt", "--epochs", "3", "--batch-size", "100", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """An MNIST-format folder of 300 training and 100 test images (from the embedded split)."""
    from refdlrt.training.datasets import load_embedded_mnist

    ds = load_embedded_mnist(n_train=300, n_test=100, seed=1)
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"), ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def _params(run_dir) -> dict:
    """Every array of the run's checkpoint (parameters, factors, momentum, batch-norm state)."""
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def _same_params(a, b):
    pa, pb = _params(a), _params(b)
    assert sorted(pa) == sorted(pb)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.fixture(scope="module")
def reference_run(tiny_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref") / "run")
    assert main(TRAIN + ["--data", tiny_data, "--out", out]) == 0
    return out


def _cli(args, env_extra=None, **kw):
    env = dict(os.environ)  # the same BLAS threading as the in-process reference: same bits
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "refdlrt.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _resume_until_done(out, tries=6):
    for _ in range(tries):
        if os.path.exists(os.path.join(out, "summary.json")) and not os.path.exists(os.path.join(out, INCOMPLETE)):
            return
        if not os.path.exists(os.path.join(out, "checkpoint.npz")):
            return "restart"
        p = _cli(["train", "--resume", out, "--no-progress"])
        p.wait(timeout=300)
        assert p.returncode == 0, p.stderr.read()
    raise AssertionError("the run did not complete")


def _wait_for(path, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        if time.time() - t0 > timeout:
            raise TimeoutError(path)
        time.sleep(0.05)


# a driver whose training steps take half a second longer (the same numbers): a signal sent after
# the first checkpoint always lands while the run still has steps to take
SLOW_STEPS = textwrap.dedent("""
    import sys, time
    import refdlrt.training.trainer as t
    real = t.Trainer.train_step
    def slow_step(self, *args, **kw):
        out = real(self, *args, **kw)
        time.sleep(0.5)
        return out
    t.Trainer.train_step = slow_step
    from refdlrt.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_ctrl_c_says_one_line_and_resume_is_bit_identical(tiny_data, reference_run, tmp_path):
    out = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "-c", SLOW_STEPS, *TRAIN, "--data", tiny_data, "--out", out],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(os.path.join(out, "checkpoint.npz"))  # epoch 1 done; six slowed steps are left
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and "is intact" in err
    assert len(err.strip().splitlines()) == 1
    assert os.path.exists(os.path.join(out, INCOMPLETE)) and not os.path.exists(os.path.join(out, "summary.json"))
    assert main(["train", "--resume", out, "--no-progress"]) == 0
    _same_params(out, reference_run)


# a driver that slows the checkpoint's rename and says when a write is in flight
SLOW_SAVE = textwrap.dedent("""
    import os, sys, time
    import refdlrt.training.trainer as t
    real = os.replace
    def slow_replace(a, b):
        if str(b).endswith("checkpoint.npz"):
            print("SAVING", flush=True)
            time.sleep(float(os.environ.get("SAVE_DELAY", "0")))
        real(a, b)
    t.os.replace = slow_replace
    from refdlrt.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_during_a_checkpoint_write_then_resume_is_bit_identical(tiny_data, reference_run, tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, SAVE_DELAY="2")
    p = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *TRAIN, "--data", tiny_data, "--out", out],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    while "SAVING" not in line:
        line = p.stdout.readline()
        assert line or p.poll() is None, p.stderr.read()
    line = ""
    while "SAVING" not in line:  # the second epoch's checkpoint is being written: kill it now
        line = p.stdout.readline()
    time.sleep(0.5)
    p.kill()
    p.wait()
    assert os.path.exists(os.path.join(out, INCOMPLETE))
    assert _params(out)  # the first epoch's checkpoint is intact (the new one was never renamed)
    _resume_until_done(out)
    _same_params(out, reference_run)


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_points_then_resume_is_bit_identical(tiny_data, reference_run, tmp_path, seed):
    rng = np.random.default_rng(seed)
    out = str(tmp_path / "run")
    for attempt in range(3):
        args = (["train", "--resume", out, "--no-progress"] if os.path.exists(os.path.join(out, "checkpoint.npz"))
                else TRAIN + ["--data", tiny_data, "--out", out, "--overwrite"])
        p = _cli(args)
        time.sleep(float(rng.uniform(1.0, 6.0)))
        p.kill()
        p.wait()
    if _resume_until_done(out) == "restart":  # killed before any epoch finished: start over
        assert main(TRAIN + ["--data", tiny_data, "--out", out, "--overwrite"]) == 0
    _same_params(out, reference_run)


def test_a_full_disk_during_the_checkpoint_is_a_message_and_keeps_the_last_one(tiny_data, tmp_path, monkeypatch, capsys):
    import refdlrt.training.trainer as trainer_mod

    out = str(tmp_path / "run")
    calls = {"n": 0}
    real = trainer_mod.np.savez

    def full(path, **arrays):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(28, "No space left on device", str(path))
        return real(path, **arrays)

    monkeypatch.setattr(trainer_mod.np, "savez", full)
    rc = main(TRAIN + ["--data", tiny_data, "--out", out])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err
    assert os.path.exists(os.path.join(out, "checkpoint.npz"))  # epoch 1's, intact
    assert os.path.exists(os.path.join(out, INCOMPLETE))


def test_an_unwritable_folder_is_refused_before_any_work(tiny_data, tmp_path, monkeypatch, capsys):
    import builtins

    real_open = builtins.open
    target = str(tmp_path / "ro")

    def deny(path, *a, **k):
        if str(path).startswith(target):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    t0 = time.perf_counter()
    rc = main(TRAIN + ["--data", tiny_data, "--out", target])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "not writable" in err and "Permission denied" in err
    assert time.perf_counter() - t0 < 5  # refused before an epoch of work
    rc = main(["validate", "--quick", "--only", "orthonormality", "--out", target])
    assert rc == 2 and "not writable" in capsys.readouterr().err


def _err(args, capsys, rc=2):
    got = main(args)
    out, err = capsys.readouterr()
    assert got == rc, (got, out, err)
    assert "Traceback" not in err
    return err


def test_run_folders_never_mix_two_runs(tiny_data, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    one = TRAIN[:] + ["--epochs", "1", "--data", tiny_data, "--out", out]
    assert main(one) == 0
    capsys.readouterr()
    err = _err(one, capsys)
    assert "holds another run" in err and "--overwrite" in err and "--resume" in err
    # a dense run over a TDLRT run: the old run's ranks.png must not stay behind
    assert os.path.exists(os.path.join(out, "ranks.png"))
    assert main(one + ["--method", "dense", "--overwrite"]) == 0
    assert not os.path.exists(os.path.join(out, "ranks.png"))
    assert json.load(open(os.path.join(out, "summary.json")))["method"] == "dense"
    assert "wrote" in capsys.readouterr().out
    # the default folder is fresh each time
    monkeypatch.chdir(tmp_path)
    assert main(TRAIN[:] + ["--epochs", "1", "--data", tiny_data]) == 0
    assert main(TRAIN[:] + ["--epochs", "1", "--data", tiny_data]) == 0
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 2 and all(r.startswith("tdlrt-") for r in runs)


def test_a_run_killed_before_its_summary_is_completed_by_resume(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(TRAIN[:] + ["--epochs", "1", "--data", tiny_data, "--out", out]) == 0
    os.remove(os.path.join(out, "summary.json"))  # as if killed after the last checkpoint
    open(os.path.join(out, INCOMPLETE), "w").close()
    capsys.readouterr()
    assert main(["train", "--resume", out]) == 0
    assert "interrupted before its summary" in capsys.readouterr().out
    assert os.path.exists(os.path.join(out, "summary.json")) and not os.path.exists(os.path.join(out, INCOMPLETE))


def test_resume_means_it(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(TRAIN[:] + ["--epochs", "1", "--data", tiny_data, "--out", out]) == 0
    capsys.readouterr()
    # finished: nothing to train is said
    assert main(["train", "--resume", out, "--no-progress"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    # options that would change the run are refused; equal ones and --epochs are fine
    err = _err(["train", "--resume", out, "--tau", "0.9", "--lr", "5"], capsys)
    assert "--tau, --lr would change the run" in err
    err = _err(["train", "--resume", out, "--out", str(tmp_path / "elsewhere")], capsys)
    assert "continues in its own folder" in err
    err = _err(["train", "--resume", out, "--epochs", "0"], capsys)
    assert "--epochs is the total" in err
    assert main(["train", "--resume", os.path.join(out, "checkpoint.npz"), "--method", "tdlrt",
                 "--epochs", "2", "--no-progress"]) == 0
    assert json.load(open(os.path.join(out, "summary.json")))["epochs"] == 2
    # a checkpoint whose epoch was edited beyond its plan
    path = os.path.join(out, "checkpoint.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["epoch"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    err = _err(["train", "--resume", out], capsys)
    assert "epoch 99" in err and "damaged or edited" in err


def _damage(path, edit):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(path, **arrays)


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.pop(next(k for k in a if "factor1" in k)), "missing array"),
    (lambda a: a.__setitem__("layer0/param/w", np.zeros((3, 3), np.float32)), "has shape (3, 3)"),
    (lambda a: a.pop("meta"), "metadata is missing"),
])
def test_damaged_checkpoints_are_one_line_messages(tiny_data, tmp_path, capsys, edit, match):
    out = str(tmp_path / "run")
    assert main(TRAIN[:] + ["--epochs", "1", "--data", tiny_data, "--out", out]) == 0
    _damage(os.path.join(out, "checkpoint.npz"), edit)
    capsys.readouterr()
    err = _err(["train", "--resume", out, "--epochs", "2"], capsys)
    assert match in err and len(err.strip().splitlines()) == 1


def test_a_garbage_checkpoint_never_suggests_unpickling(tmp_path, capsys):
    bad = tmp_path / "checkpoint.npz"
    np.savez(bad, meta=np.array([object()], dtype=object))
    err = _err(["train", "--resume", str(bad)], capsys)
    assert "not a refdlrt checkpoint" in err and "allow_pickle" not in err


@pytest.mark.parametrize("args, match", [
    (["--epochs", "0"], "--epochs"),
    (["--seed", "-1"], "--seed"),
    (["--widths", "0", "--model", "vgg_small"], "--widths"),
    (["--layer-r-max", "fcX=3,3"], "no low-rank layer named fcX"),
    (["--ranks", "conv9=2,2,2,2"], "not low-rank"),
    (["--init-rank", "0"], "--init-rank"),
    (["--r-min", "0"], "--r-min"),
])
def test_bad_train_options_name_the_option(tiny_data, tmp_path, capsys, args, match):
    err = _err(TRAIN + ["--data", tiny_data, "--out", str(tmp_path / "r")] + args, capsys)
    assert match in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "r" / "checkpoint.npz")


def test_out_that_is_a_file_and_bad_validate_options(tmp_path, capsys, tiny_data):
    f = tmp_path / "file"
    f.write_text("x")
    err = _err(TRAIN + ["--data", tiny_data, "--out", str(f)], capsys)
    assert "expected a folder, found an existing file" in err
    err = _err(["validate", "--quick", "--out", str(f)], capsys)
    assert "expected a folder, found an existing file" in err
    err = _err(["validate", "--quick", "--seed", "-1", "--out", str(tmp_path / "v")], capsys)
    assert "--seed" in err and "NOT OK" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="--seed"):
        main(["--debug", "validate", "--seed", "-1", "--out", str(tmp_path / "v")])
