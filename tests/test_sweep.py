"""``refdlrt sweep`` (issue 13): a grid of runs on a real Dask cluster (a scheduler and two
workers started here as processes), a worker and the sweep itself killed mid-sweep, the sweep
started again: the same numbers, bit for bit, as the same cells run one after another. Also the
grid's checks, learning-rate selection, ranks_from, divergence and errors, --report."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import write_mnist_dir

from refdlrt.cli import main

pytest.importorskip("distributed", reason="Dask distributed is not installed (the sweep extra)")
pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed (the sweep extra)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
FAST = ["--no-progress", "--no-cell-plots"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """An MNIST-format folder of 400 training and 200 test images (from the embedded split)."""
    from refdlrt.training.datasets import load_embedded_mnist

    ds = load_embedded_mnist(n_train=400, n_test=200, seed=3)
    return write_mnist_dir(tmp_path_factory.mktemp("tiny"), ds.x_train, ds.y_train, ds.x_test, ds.y_test)


def grid(data):
    return ["--grid", "method=dense,tdlrt", "seed=0,1", "--set", "epochs=3", "batch_size=50",
            "val_fraction=0.25", f"data={data}"]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The cells run one after another in this process, one BLAS thread (as on the workers)."""
    out = str(tmp_path_factory.mktemp("ref") / "sweep")
    assert main(["sweep", "--out", out, *grid(tiny_data), "--workers", "0", *FAST]) == 0
    return out


@pytest.fixture
def cluster(tmp_path):
    """A Dask scheduler and two single-threaded workers (no nanny: one process each), started
    as processes on localhost; all of them are ended afterwards."""
    sched_file = str(tmp_path / "scheduler.json")
    env = dict(os.environ, **ONE_THREAD)
    procs = {}

    def start(name, args):
        procs[name] = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return procs[name]

    start("scheduler", ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--no-dashboard", "--scheduler-file", sched_file])

    def add_worker(name):
        return start(name, ["distributed.cli.dask_worker", "--scheduler-file", sched_file,
                            "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", name,
                            "--death-timeout", "60"])

    try:
        t0 = time.time()
        while not os.path.exists(sched_file):
            assert time.time() - t0 < 60, "the scheduler did not start"
            time.sleep(0.1)
        for name in ("w1", "w2"):
            add_worker(name)
        from distributed import Client

        with Client(scheduler_file=sched_file, timeout=60) as c:
            c.wait_for_workers(2, timeout=60)
        yield dict(file=sched_file, procs=procs, add_worker=add_worker)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


def _checkpoint(cell_dir) -> dict:
    with np.load(os.path.join(cell_dir, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files if k != "meta"}


NUMBERS = ("test_accuracy", "val_accuracy", "train_loss", "test_loss", "ranks",
           "lowrank_param_fraction", "conv_compression", "epochs", "config")


def assert_same_results(a, b):
    """The same cells, the same final parameters bit for bit, the same summary numbers."""
    cells = sorted(os.listdir(os.path.join(a, "cells")))
    assert cells == sorted(os.listdir(os.path.join(b, "cells")))
    for c in cells:
        pa, pb = _checkpoint(os.path.join(a, "cells", c)), _checkpoint(os.path.join(b, "cells", c))
        assert sorted(pa) == sorted(pb)
        for k in pa:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=f"{c}: {k}")
        sa, sb = (json.load(open(os.path.join(d, "cells", c, "summary.json"))) for d in (a, b))
        assert {k: sa[k] for k in NUMBERS} == {k: sb[k] for k in NUMBERS}, c
    ra, rb = (list(csv.DictReader(open(os.path.join(d, "sweep.csv")))) for d in (a, b))
    drop = ("seconds_per_epoch",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rb]


def _sweep_cli(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "refdlrt.cli", "sweep", *args], cwd=ROOT,
                            env=dict(os.environ, **ONE_THREAD), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _attempts(cell_dir) -> list:
    try:
        with open(os.path.join(cell_dir, "attempts.jsonl")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            pass
    return out


def test_a_worker_and_the_sweep_killed_then_resumed_give_the_sequential_results(
        tiny_data, reference, cluster, tmp_path):
    out = str(tmp_path / "sweep")
    args = ["--out", out, *grid(tiny_data), "--scheduler-file", cluster["file"], *FAST]
    driver = _sweep_cli(args)
    procs = cluster["procs"]
    workers = {procs[n].pid: n for n in ("w1", "w2")}
    victim = None
    t0 = time.time()
    while victim is None:  # the first cell with a checkpoint and no summary: kill its worker
        assert time.time() - t0 < 120 and driver.poll() is None, driver.communicate()
        for c in sorted(os.listdir(os.path.join(out, "cells"))) if os.path.isdir(os.path.join(out, "cells")) else []:
            d = os.path.join(out, "cells", c)
            att = _attempts(d)
            if (att and att[-1]["pid"] in workers and os.path.exists(os.path.join(d, "checkpoint.npz"))
                    and not os.path.exists(os.path.join(d, "summary.json"))):
                victim = c
                os.kill(att[-1]["pid"], signal.SIGKILL)
                break
        time.sleep(0.02)
    # Dask gives the lost worker's cell to the other worker, which resumes it from its checkpoint
    d = os.path.join(out, "cells", victim)
    while len(_attempts(d)) < 2 and driver.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)
    assert len(_attempts(d)) >= 2, driver.communicate()
    assert _attempts(d)[-1]["started_at_epoch"] >= 1
    # now kill the sweep itself (kill -9), unless it has finished already
    driver.kill()
    driver.communicate()
    cluster["add_worker"]("w3")
    again = _sweep_cli(args)
    stdout, stderr = again.communicate(timeout=180)
    assert again.returncode == 0, stderr
    assert "finished already" in stdout
    assert_same_results(out, reference)
    # a third start has nothing to train and changes nothing
    stdout = _sweep_cli(args).communicate(timeout=120)[0]
    assert "4 finished already (skipped), 0 to run" in stdout


@pytest.mark.parametrize("args, match", [
    (["--grid", "method=dense,tdlrt", "taux=0.1"], "unknown field 'taux'"),
    (["--grid", "method=dense,nope"], "method: expected one of"),
    (["--grid", "tau=0.1,abc"], "tau: expected a number, got 'abc'"),
    (["--grid", "tau=-1"], "tau: expected a finite tau >= 0"),
    (["--grid", "seed=0,1", "--set", "epochs=0"], "epochs: expected an integer >= 1"),
    (["--grid", "seed=0", "--set", "data=/no/such/folder"], "data: expected 'embedded'"),
    (["--grid", "lr=0.1,0.2", "--select-lr", "0.1", "--set", "val_fraction=0.1"], "lr is chosen"),
    (["--grid", "seed=0,1", "--select-lr", "0.1,0.05"], "val_fraction=0.1"),
    (["--grid", "method=tdlrt", "ranks_from=tdlrt"], "ranks_from: names the cell's own method"),
    (["--grid", "method=dense", "--workers", "-1"], "--workers"),
])
def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, capsys, args, match):
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), *args, *FAST]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_a_grid_file_is_the_same_plan_as_the_command_line(tmp_path):
    from refdlrt.experiments.grid import expand, plan_from_args

    f = tmp_path / "g.toml"
    f.write_text('[grid]\nmethod = ["dense", "tdlrt"]\ntau = [0.1, 0.2]\nseed = [0, 1]\n'
                 '[set]\nepochs = 2\nranks = {conv2 = [4, 4, 3, 3]}\n')
    a = plan_from_args(grid_file=str(f))
    b = plan_from_args(grid=["method=dense,tdlrt", "tau=0.1,0.2", "seed=0,1"],
                       set_items=["epochs=2", 'ranks={"conv2": [4, 4, 3, 3]}'])
    assert a.to_json() == b.to_json()
    cells = expand(a)
    assert len(cells) == 8 and cells[0].id == "method=dense__tau=0.1__seed=0"
    j = tmp_path / "g.json"
    j.write_text(json.dumps(dict(grid=a.grids, set=a.fixed)))
    assert plan_from_args(grid_file=str(j)).to_json() == a.to_json()


def test_a_changed_grid_on_an_existing_sweep_is_refused(reference, tiny_data, capsys):
    err_args = ["sweep", "--out", reference, *grid(tiny_data)[:-1], "data=embedded", *FAST]
    assert main(err_args) == 2
    err = capsys.readouterr().err
    assert "holds a sweep with another grid" in err and "set: recorded" in err
    assert main(["sweep", "--out", reference, "--grid", "method=dense", *FAST]) == 2
    assert "grid: recorded" in capsys.readouterr().err
    swapped = ["--grid", "seed=0,1", "method=dense,tdlrt", *grid(tiny_data)[3:]]
    assert main(["sweep", "--out", reference, *swapped, *FAST]) == 2  # other cell ids: refused
    assert "grid: recorded" in capsys.readouterr().err
    # --out alone continues the recorded sweep: here, nothing left to do
    assert main(["sweep", "--out", reference, *FAST]) == 0
    assert "4 finished already" in capsys.readouterr().out


def test_select_lr_ranks_from_divergence_errors_and_report(tiny_data, tmp_path, capsys):
    f = tmp_path / "g.toml"
    f.write_text(f"""
[set]
epochs = 1
batch_size = 50
val_fraction = 0.25
data = "{tiny_data}"

[[grid]]
method = ["tdlrt"]
seed = [0, 1]

[[grid]]
method = ["tucker-direct"]
ranks_from = ["tdlrt"]
seed = [0, 1]

[sweep]
select_lr = [1e4, 0.05]
""")
    out = str(tmp_path / "sw")
    assert main(["sweep", "--out", out, "--grid-file", str(f), "--workers", "0", *FAST]) == 0
    capsys.readouterr()
    summary = json.load(open(os.path.join(out, "sweep.json")))["summary"]
    assert [s["group"] for s in summary] == ["method=tdlrt", "method=tucker-direct, ranks_from=tdlrt"]
    for s in summary:  # lr 1e4 diverged on the selection seed: 0.05 is chosen
        assert s["lr"] == 0.05 and s["selection"]["10000.0"] == 0.0
        assert s["ok"] == 2 and s["diverged"] == 0 and s["diverged_in_selection"] == 1
    cells = {r["id"]: r for r in json.load(open(os.path.join(out, "sweep.json")))["cells"]}
    assert cells["method=tdlrt__seed=0__lr=10000"]["status"] == "diverged"
    assert cells["method=tdlrt__seed=1__lr=sel"]["lr"] == 0.05
    assert cells["method=tdlrt__seed=1__lr=sel"]["reported"]
    assert not cells["method=tdlrt__seed=0__lr=10000"]["reported"]
    for seed, src in ((0, "method=tdlrt__seed=0__lr=0.05"), (1, "method=tdlrt__seed=1__lr=sel")):
        dep = json.load(open(os.path.join(out, "cells", f"method=tucker-direct__ranks_from=tdlrt__seed={seed}__lr="
                                          f"{'0.05' if seed == 0 else 'sel'}", "summary.json")))
        assert dep["config"]["ranks"] == cells[src]["ranks"]  # starts at tdlrt's final ranks
    # started again: nothing runs, the diverged cell is not tried again; --report rebuilds
    before = {c: _attempts(os.path.join(out, "cells", c)) for c in cells}
    assert main(["sweep", "--out", out, "--grid-file", str(f), "--workers", "0", *FAST]) == 0
    assert "6 finished already" in capsys.readouterr().out
    assert before == {c: _attempts(os.path.join(out, "cells", c)) for c in cells}
    for name in ("sweep.csv", "summary.csv", "summary.md", "accuracy_vs_params.png", "ranks.png"):
        os.remove(os.path.join(out, name))
    assert main(["sweep", "--report", out]) == 0
    assert "(chosen)" in capsys.readouterr().out
    assert json.load(open(os.path.join(out, "sweep.json")))["summary"] == summary
    assert os.path.getsize(os.path.join(out, "accuracy_vs_params.png")) > 1000


def test_a_failing_cell_is_recorded_and_does_not_stop_the_sweep(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "sw")
    args = ["sweep", "--out", out, "--grid", "method=dense,tdlrt", "--set", "epochs=1",
            "batch_size=100", f"data={tiny_data}", 'layer_r_max={"fc1": [3, 3]}', "--workers", "0", *FAST]
    assert main(args) == 1  # dense has no low-rank layer fc1: that cell fails, tdlrt trains
    captured = capsys.readouterr()
    assert "1 cell(s) failed with an error (method=dense" in captured.err
    rows = {r["id"]: r for r in csv.DictReader(open(os.path.join(out, "sweep.csv")))}
    assert rows["method=dense"]["status"] == "error" and "no low-rank layer named fc1" in rows["method=dense"]["message"]
    assert rows["method=tdlrt"]["status"] == "ok"
    fail = json.load(open(os.path.join(out, "cells", "method=dense", "failure.json")))
    assert fail["status"] == "error"
    assert main(args) == 1  # an error is tried again (it may have been a lost machine)
    assert "1 finished already" in capsys.readouterr().out


def test_the_validation_split_is_held_out_of_the_training_images_by_seed():
    from refdlrt.training.datasets import holdout, load_embedded_mnist

    ds = load_embedded_mnist(n_train=500, n_test=100)
    a = holdout(ds, train_size=400, val_fraction=0.25, seed=1)
    assert a.x_train.shape[0] == 300 and a.x_val.shape[0] == 100 and a.y_val.shape == (100,)
    np.testing.assert_array_equal(a.x_test, ds.x_test)  # the test split is never touched
    first = ds.x_train[:400].reshape(400, -1)
    idx = lambda x: sorted(int(np.flatnonzero((first == r).all(axis=1))[0]) for r in x.reshape(len(x), -1))
    assert sorted(idx(a.x_train) + idx(a.x_val)) == list(range(400))  # disjoint, all of the 400
    b, c = (holdout(ds, train_size=400, val_fraction=0.25, seed=s) for s in (1, 2))
    np.testing.assert_array_equal(a.x_val, b.x_val)  # deterministic by seed
    assert idx(a.x_val) != idx(c.x_val)
    assert holdout(ds) is ds
    with pytest.raises(ValueError, match="val_fraction"):
        holdout(ds, train_size=10, val_fraction=0.01)
    with pytest.raises(ValueError, match="train_size"):
        holdout(ds, train_size=501)


def test_train_reports_the_validation_accuracy(tiny_data, tmp_path, capsys):
    from threadpoolctl import threadpool_limits

    out = tmp_path / "run"
    with threadpool_limits(limits=1):  # two BLAS threads on a busy 2-core machine crawl
        rc = main(["train", "--data", tiny_data, "--epochs", "1", "--batch-size", "100",
                   "--train-size", "300", "--val-fraction", "0.2", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    assert "validation accuracy" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert 0 <= s["val_accuracy"] <= 1 and s["config"]["val_fraction"] == 0.2
    assert "val_accuracy" in (out / "history.csv").read_text().splitlines()[0]
    with pytest.raises(ValueError, match="val_fraction"):
        main(["--debug", "train", "--val-fraction", "1.5", "--out", str(tmp_path / "r2")])


def test_the_ranks_plot_takes_a_tucker_and_a_matrix_version_of_the_same_layer(tmp_path):
    """tdlrt's conv2 has four mode ranks, matrix-dlrt's conv2 two (one rank): one figure for
    both, each group drawn on the panels it has (this crashed --report on a mixed sweep)."""
    import types

    from refdlrt.experiments.plots import ranks_over_training

    table = []
    for method, ranks in (("tdlrt", {"conv2": [9, 6, 5, 5], "fc1": [15, 15]}),
                          ("matrix-dlrt", {"conv2": [12, 12], "fc1": [16, 16]})):
        cell = tmp_path / "cells" / method
        cell.mkdir(parents=True)
        steps = [dict(epoch=0, step=j, ranks=ranks) for j in range(3)]
        (cell / "history.json").write_text(json.dumps({"steps": steps}))
        table.append(dict(id=method, group=f"method={method}", method=method, reported=True,
                          status="ok"))
    out = tmp_path / "ranks.png"
    ranks_over_training(types.SimpleNamespace(out=str(tmp_path)), table, str(out))
    assert out.stat().st_size > 0


def test_a_collapsed_baseline_is_listed_under_the_figure_not_drawn(tmp_path):
    from refdlrt.experiments.plots import accuracy_vs_params

    def group(method, acc, frac):
        return dict(method=method, _axes=["method"], test_accuracy_mean=acc, test_accuracy_std=0.01,
                    lowrank_param_fraction_mean=frac, lowrank_param_fraction_std=0.0)

    summary = [group("dense", 0.98, 1.0), group("tdlrt", 0.97, 0.23), group("tucker-direct", 0.113, 0.24)]
    off = accuracy_vs_params(summary, {}, str(tmp_path / "a.png"))
    assert off == ["tucker-direct: 11.3 %"]
    assert accuracy_vs_params(summary[:2], {}, str(tmp_path / "b.png")) == []


def test_the_summary_tells_unfinished_from_failed_cells():
    """A partial sweep (--report while it runs): cells not run yet are "to run", not failed."""
    import types

    from refdlrt.experiments.aggregate import markdown, summarize

    g = (("method", "dense"),)
    cells = [types.SimpleNamespace(id=f"c{k}", group=g, group_label="method=dense", seed=k,
                                   phase="run") for k in range(4)]
    state = types.SimpleNamespace(cells=cells, plan=types.SimpleNamespace(select_lr=None))
    metrics = dict(lr=0.1, test_accuracy=0.9, lowrank_param_fraction=1.0, val_accuracy=None,
                   conv_compression=0.0, seconds_per_epoch=1.0)
    table = [dict(id=f"c{k}", reported=True, status=st, **metrics)
             for k, st in enumerate(("ok", "error", "unfinished", "diverged"))]
    (row,) = summarize(state, table)
    assert (row["ok"], row["diverged"], row["failed"], row["unfinished"]) == (1, 1, 1, 1)
    assert "| 1 / 4 (1 to run) (1 failed) |" in markdown([row])
