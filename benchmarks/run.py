"""Issue 14's performance benchmarks in one command: one table at the end, and JSON.

Usage:  python benchmarks/run.py [--quick] [--only steps,settled,breakdown,layer,torch,memory,conv]
                                 [--threads T] [--json PATH]

Sections (``--only`` picks some; ``--quick`` shrinks every size for a smoke test of < 1 min):

steps      one epoch of ``Trainer(TrainConfig(model, method, epochs=1))`` on the embedded MNIST
           data (what ``refdlrt train`` uses by default), lenet5 and vgg_small x dense and tdlrt;
           median ms of the epoch's last 40 steps (steady state; the issue's definition). Then,
           as a check against drifts of a shared machine, 40 more steps of each, dense and tdlrt
           in turn on the same batches (lr / 2, still rank-adaptive): "il." columns (these
           alternate between two models, so caches are colder, which costs the smaller
           LeNet5 steps more). Targets tdlrt / dense: vgg_small <= 0.8, lenet5 <= 1.5.
           A one-epoch run anneals its learning rate within the epoch, so its ranks are those of
           a short run, not yet the settled ranks of a CLI-default run (vgg_small's fc1 18 against 11).
settled    the same targets "once the ranks have settled" (the issue's words): paired steps of
           the TDLRT trainer of a full CLI-default run (``refdlrt train --model M``, 15 epochs),
           loaded from its committed checkpoint (``benchmarks/settled/M.npz``, provenance in
           ``benchmarks/settled/README.md``), and a dense trainer of the same configuration, in
           turn on the same batches at lr / 200 (so that the ranks stay where training left
           them; ``final_ranks.checkpoint_pair``, as ``final_ranks.py``).
breakdown  one TDLRT step (vgg_small, lenet5) after an epoch, split into forward (+ loss),
           backward, projections (``project``/``k_gradient``/``norm`` of each layer's
           projector), integrator
           (``Trainer._lowrank_update`` minus its projections) and dense updates + bookkeeping,
           by a copy of ``Trainer.train_step`` with timers that is checked bit for bit against
           the real step first. Target: integrator share of the step <= 15 % on vgg_small.
layer      one conv layer n = 64 -> 64, 3x3, pad 1, N = 128, 32x32, float32: dense f+b against
           Tucker f+b + projections + ``tdlrt_step`` at ranks (r, r, 3, 3), r in 4, 8, 16, 32.
           Analytic FLOPs (multiply-adds x 2), P = N Ho Wo (= N H W here), k^2 = 9, r^ = min(2r, n):
             dense f+b      = 3 * 2P k^2 n n
             Tucker forward = 2P (n r + k^2 r r + r n)
             Tucker backward= 2P (r n + 2 k^2 r r + r n)
             projections    = 2P (k^2 r n  [K-step mode 0]  +  k^2 n r  [K-step mode 1]
                                  + k^2 r^ r^ + 2 n r^  [S-step: kernel gradient, and the
                                    channel projections U^_1^T x, U^_0^T dy it needs])
             (modes 2, 3 reuse the reduced gradient of the backward: no extra FLOPs)
             FLOP ratio     = (forward + backward + projections) / dense f+b
           Target: (measured ratio) / (FLOP ratio) <= 1.3 at r = 16.
torch      one dense LeNet5 training step (batch 64, float32), refdlrt against a torch
           nn.Sequential of the same layer specs with SGD (same lr, momentum). Target <= 1.5.
memory     tracemalloc peak (NumPy reports its buffers to it) of one epoch of 2,000 images,
           dense and tdlrt, lenet5 and vgg_small, each in a fresh subprocess, tracing from
           after the trainer is built; the training steps and the test evaluation separately.
conv       ``bench_conv.time_case`` on its big shape: <= 1.5x torch float32, <= 1.1x float64.

Every measurement carries ``other``: the share of the machine's CPUs used by other processes
meanwhile (from /proc/stat); only rows with ``other`` near 0 % are meaningful.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import time
import tracemalloc

SECTIONS = ("steps", "settled", "breakdown", "layer", "torch", "memory", "conv")
HERE = os.path.dirname(os.path.abspath(__file__))


def _sections(text: str) -> tuple:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected names from {','.join(SECTIONS)}, got {text!r}")
    return names


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a result")
    p.add_argument("--only", type=_sections, default=SECTIONS, help="comma-separated sections")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for numpy, torch")
    p.add_argument("--json", default=os.path.join(HERE, "results", "run.json"), help="output")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # "model,method"
    return p.parse_args()


ARGS = _parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np
from ab_steps import step_seconds  # benchmarks/ is the script's folder
from final_ranks import checkpoint_pair
from layer_bench import layer_data, layer_flops, time_layer
from machine import cpu_busy_seconds, git_commit

from refdlrt.backend import to_numpy
from refdlrt.ops.loss import softmax_cross_entropy, softmax_cross_entropy_backward
from refdlrt.training.datasets import load_dataset, load_embedded_mnist
from refdlrt.training.trainer import TrainConfig, Trainer

try:
    import torch
except ImportError:
    torch = None

MODELS = ("lenet5", "vgg_small")


class OtherLoad:
    """``with OtherLoad() as load: ...``; then ``load.share`` is the share of the machine's CPUs
    that other processes used meanwhile (NaN without /proc/stat)."""

    def __enter__(self):
        self.busy, self.own = cpu_busy_seconds(), time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy, self.share = cpu_busy_seconds(), float("nan")
        if busy is not None and self.busy is not None:
            other = (busy - self.busy) - (time.process_time() - self.own)
            self.share = max(0.0, other / ((time.perf_counter() - self.wall) * os.cpu_count()))


def median_ms(seconds) -> float:
    return 1e3 * float(np.median(seconds))


def print_table(title: str, head: list, rows: list) -> None:
    cells = [[str(c) for c in row] for row in [head] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]

    def line(r):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    print(f"\n== {title}\n{line(cells[0])}\n{'-' * len(line(cells[0]))}")
    print("\n".join(line(r) for r in cells[1:]), flush=True)


def check(quantity: str, value: float, target: float, other: float, fmt="{:.2f}x") -> dict:
    return dict(quantity=quantity, measured=value, target=target, ok=bool(value <= target),
                other=other, fmt=fmt)


def load_data(quick: bool):
    """The data ``refdlrt train`` uses by default (--data embedded); fewer test images if quick."""
    return load_embedded_mnist(n_test=128) if quick else load_dataset("embedded")


def trained(model, method, data, train_size):
    """A trainer after one epoch (``tr.run_epoch()``) and the other load meanwhile."""
    tr = Trainer(TrainConfig(model=model, method=method, epochs=1, train_size=train_size), data)
    with OtherLoad() as load:
        tr.run_epoch()
    return tr, load.share


# -- steps -------------------------------------------------------------------------------------
def interleaved_steps(trainers: dict, n: int, seed: int = 2) -> dict:
    """Seconds of ``n`` steady-state steps of each trainer, taken in turn on the same batches
    (dense, tdlrt, dense, ...), so that a slow moment of the machine hits both alike."""
    rng, out = np.random.default_rng(seed), {k: [] for k in trainers}
    for tr in trainers.values():
        tr.epoch = tr.cfg.epochs - 1  # still rank-adaptive (after the last epoch: fixed rank)
    for _ in range(n):
        some = next(iter(trainers.values()))
        idx = np.sort(rng.choice(len(some.data.y_train), some.cfg.batch_size, replace=False))
        for k, tr in trainers.items():
            xb = tr.xp.asarray(tr.data.x_train[idx], dtype=tr.dtype)
            yb = tr.xp.asarray(tr.data.y_train[idx])
            t0 = time.perf_counter()
            tr.train_step(xb, yb, tr.cfg.lr / 2)
            out[k].append(time.perf_counter() - t0)
    return out


def section_steps(data, quick):
    (n, n_il), targets = (5, 6) if quick else (40, 80), {"lenet5": 1.5, "vgg_small": 0.8}
    res, rows, checks, trainers = {}, [], [], {}
    for model in MODELS:
        r, pair = {}, {}
        for method in ("dense", "tdlrt"):
            tr, other = trained(model, method, data, 384 if quick else None)
            trainers[model, method] = pair[method] = tr
            r[method] = dict(epoch_ms=median_ms([s["seconds"] for s in tr.steps[-n:]]),
                             epoch_other=other, ranks=tr.ranks(),
                             test_accuracy=tr.history[-1]["test_accuracy"],
                             lowrank_param_fraction=tr.counts()["lowrank_param_fraction"])
        with OtherLoad() as load:
            seconds = interleaved_steps(pair, n_il)
        for method in pair:
            r[method]["interleaved_ms"] = median_ms(seconds[method])
        # each TDLRT step over the dense step just before it, on the same batch: a drift of the
        # machine between the two epochs, or within the interleaved run, cancels in each pair
        r["paired_ratio"] = float(np.median(np.array(seconds["tdlrt"]) / np.array(seconds["dense"])))
        other = max(load.share, r["dense"]["epoch_other"], r["tdlrt"]["epoch_other"])
        r["ratio"] = r["tdlrt"]["epoch_ms"] / r["dense"]["epoch_ms"]  # the definition
        r["interleaved_ratio"] = r["tdlrt"]["interleaved_ms"] / r["dense"]["interleaved_ms"]
        r["target"], r["other"] = targets[model], other
        res[model] = r
        ranks = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in r["tdlrt"]["ranks"].items())
        rows.append([model, f"{r['dense']['epoch_ms']:.1f}", f"{r['tdlrt']['epoch_ms']:.1f}",
                     f"{r['ratio']:.2f}", f"<= {r['target']}", f"{other:.0%}",
                     f"{r['dense']['interleaved_ms']:.1f}", f"{r['tdlrt']['interleaved_ms']:.1f}",
                     f"{r['interleaved_ratio']:.2f}", f"{r['paired_ratio']:.2f}",
                     f"{r['tdlrt']['lowrank_param_fraction']:.1%}", ranks])
        checks.append(check(f"steps: {model} tdlrt / dense, epoch medians", r["ratio"], r["target"],
                            other))
        checks.append(check(f"steps: {model} tdlrt / dense, paired", r["paired_ratio"],
                            r["target"], other))
    print_table(f"steps (ms per training step: median of the last {n} steps of one epoch; then "
                f"{n_il} more of each, interleaved on the same batches; paired = median of the "
                f"{n_il} ratios tdlrt / dense of one batch)",
                ["model", "dense", "tdlrt", "ratio", "target", "other", "dense il.", "tdlrt il.",
                 "ratio il.", "paired", "params", "final ranks"], rows)
    return res, checks, trainers


# -- settled -----------------------------------------------------------------------------------
SETTLED = os.path.join(HERE, "settled")  # checkpoints of full CLI-default runs, one per model


def section_settled(data, quick):
    """Paired steps at the ranks of a full CLI-default run (module docstring, "settled")."""
    n, targets = (6 if quick else 80), {"lenet5": 1.5, "vgg_small": 0.8}
    res, rows, checks = {}, [], []
    for model in MODELS:
        path = os.path.join(SETTLED, f"{model}.npz")
        pair = dict(zip(("dense", "tdlrt"), checkpoint_pair(path, data)))
        ranks_before = pair["tdlrt"].ranks()
        # at the epoch checkpoint_pair set (the run's last rank-adaptive one), after 3 warm-up
        # steps, as final_ranks.py
        with OtherLoad() as load:
            seconds = step_seconds(pair, data, n, lr_factor=1 / 200, seed=2)
        r = {m: dict(ms=median_ms(seconds[m])) for m in pair}
        r.update(paired_ratio=float(np.median(np.array(seconds["tdlrt"]) / np.array(seconds["dense"]))),
                 target=targets[model], other=load.share, ranks=pair["tdlrt"].ranks(),
                 ranks_moved=pair["tdlrt"].ranks() != ranks_before, checkpoint=os.path.relpath(path, HERE),
                 lowrank_param_fraction=pair["tdlrt"].counts()["lowrank_param_fraction"])
        res[model] = r
        ranks = "; ".join(f"{k} {','.join(map(str, v))}" for k, v in r["ranks"].items())
        rows.append([model, f"{r['dense']['ms']:.1f}", f"{r['tdlrt']['ms']:.1f}",
                     f"{r['paired_ratio']:.2f}", f"<= {r['target']}", f"{load.share:.0%}",
                     f"{r['lowrank_param_fraction']:.1%}",
                     ranks + (" (moved while timed)" if r["ranks_moved"] else "")])
        checks.append(check(f"settled: {model} tdlrt / dense, paired", r["paired_ratio"],
                            r["target"], load.share))
    print_table(f"settled (ms per training step at the ranks of a full CLI-default run, "
                f"benchmarks/settled/: medians of {n} steps of each, in turn on the same batches, "
                f"lr / 200; paired = median of the {n} ratios tdlrt / dense of one batch)",
                ["model", "dense", "tdlrt", "paired", "target", "other", "params", "ranks"], rows)
    return res, checks


# -- breakdown ---------------------------------------------------------------------------------
PARTS = ("forward", "backward", "projections", "integrator", "dense+rest")


class TimedProjector:
    """Forwards everything to a layer's projector; adds the seconds of its ``project``,
    ``k_gradient`` (the K-steps' contractions) and ``norm`` calls to ``clock[0]``."""

    def __init__(self, inner, clock):
        self._inner, self._clock = inner, clock

    def __getattr__(self, name):  # every attribute; AttributeError where the projector has none
        attr = getattr(self._inner, name)
        if name not in ("project", "k_gradient", "norm"):
            return attr

        def timed(*args):
            t0 = time.perf_counter()
            out = attr(*args)
            self._clock[0] += time.perf_counter() - t0
            return out
        return timed


def instrumented_step(tr, xb, yb, lr):
    """``Trainer.train_step`` with timers: ((loss, accuracy), {part: seconds})."""
    t, clock = dict.fromkeys(PARTS, 0.0), [0.0]
    t0 = time.perf_counter()
    logits = tr.forward(xb, training=True)
    loss, cache = softmax_cross_entropy(logits, yb)
    loss = float(loss)
    t1 = time.perf_counter()
    tr.backward(softmax_cross_entropy_backward(cache))
    t2 = time.perf_counter()
    t["forward"], t["backward"], mu = t1 - t0, t2 - t1, tr.cfg.momentum
    for k, layer in enumerate(tr.layers):
        for name, p in layer.params.items():
            v = tr._heavy_ball((k, name), layer.grads[name], mu)
            layer.params[name] = p - lr * v
        if hasattr(layer, "weight"):
            real = layer.projector
            layer.projector = lambda real=real: TimedProjector(real(), clock)
            ta = time.perf_counter()
            try:
                tr._lowrank_update(k, layer, lr, mu)
            finally:
                t["integrator"] += time.perf_counter() - ta
                del layer.projector  # the class's method again
    acc = float(to_numpy((logits.argmax(axis=1) == yb).mean()))
    total = time.perf_counter() - t0
    t["projections"], t["integrator"] = clock[0], t["integrator"] - clock[0]
    t["dense+rest"] = total - sum(t[p] for p in PARTS[:-1])
    return (loss, acc), t


def _state(tr) -> list:
    """Every number a step changes: parameters, batchnorm state, weights, velocities."""
    out = []
    for ly in tr.layers:
        out += [*ly.params.values(), *getattr(ly, "state", {}).values()]
        out += [ly.weight.core, *ly.weight.factors] if hasattr(ly, "weight") else []
    out += [tr.velocity[k] for k in sorted(tr.velocity, key=str)]
    return [to_numpy(a) for a in out]


def check_against_train_step(tr, xb, yb, lr):
    """The instrumented step on ``tr`` must equal ``train_step`` on a copy, bit for bit."""
    ref = copy.deepcopy(tr, memo={id(tr.xp): tr.xp})  # the array module is shared, not copied
    expect, (got, _) = ref.train_step(xb, yb, lr), instrumented_step(tr, xb, yb, lr)
    a, b = _state(ref), _state(tr)
    same = got == expect and len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))
    if not same:
        raise RuntimeError("breakdown: the instrumented step drifted from Trainer.train_step; "
                           "update instrumented_step in benchmarks/run.py")


def section_breakdown(data, quick, trainers):
    steps, res, rows, checks = (3 if quick else 10), {}, [], []
    for model in ("vgg_small", "lenet5"):
        tr = trainers.get((model, "tdlrt"))
        tr = tr or trained(model, "tdlrt", data, 384 if quick else 1920)[0]
        tr.epoch = tr.cfg.epochs - 1  # still rank-adaptive (after the last epoch: fixed rank)
        lr, rng, n = tr.cfg.lr / 2, np.random.default_rng(1), len(tr.data.y_train)

        def batch():
            idx = np.sort(rng.choice(n, tr.cfg.batch_size, replace=False))
            xp, ds = tr.xp, tr.data
            return xp.asarray(ds.x_train[idx], dtype=tr.dtype), xp.asarray(ds.y_train[idx])

        check_against_train_step(tr, *batch(), lr)
        with OtherLoad() as load:
            samples = [instrumented_step(tr, *batch(), lr)[1] for _ in range(steps)]
        ms = {p: median_ms([s[p] for s in samples]) for p in PARTS}
        step = sum(ms.values())
        res[model] = dict(ms=ms, share={p: ms[p] / step for p in PARTS}, step_ms=step,
                          ranks=tr.ranks(), lr=lr, other=load.share)
        rows.append([model] + [f"{ms[p]:.1f} ({ms[p] / step:.0%})" for p in PARTS]
                    + [f"{step:.1f}", f"{load.share:.0%}"])
        if model == "vgg_small":
            checks.append(check("breakdown: integrator LA share, vgg_small",
                                res[model]["share"]["integrator"], 0.15, load.share, "{:.1%}"))
    print_table(f"breakdown of one tdlrt step (ms, median of {steps} steps; % of their sum)",
                ["model", *PARTS, "step", "other"], rows)
    return res, checks


# -- layer -------------------------------------------------------------------------------------
def section_layer(quick):
    N, H, n, k, repeats = (8, 8, 64, 3, 2) if quick else (128, 32, 64, 3, 5)
    x, dy, w = layer_data(N, H, n, k)
    res, rows, checks = {}, [], []
    for r in (4, 8, 16, 32):
        with OtherLoad() as load:
            dense, fb, full = 1e3 * time_layer(x, w, dy, r, repeats)
        fl_dense, fl_tucker = layer_flops(N * H * H, n, k * k, r)
        ratio, fratio = full / dense, fl_tucker / fl_dense
        res[r] = dict(dense_fb_ms=dense, tucker_fb_ms=fb, tucker_full_ms=full, ratio=ratio,
                      flop_ratio=fratio, efficiency=ratio / fratio, other=load.share)
        rows.append([f"r={r}", f"{dense:.1f}", f"{fb:.1f}", f"{full:.1f}", f"{ratio:.3f}",
                     f"{fratio:.3f}", f"{ratio / fratio:.2f}", f"{load.share:.0%}"])
        if r == 16:
            checks.append(check("layer: (TDLRT / dense) / FLOP ratio at r=16", ratio / fratio, 1.3,
                                load.share))
    print_table(f"layer {n}->{n} 3x3 pad 1, N={N}, {H}x{H}, float32 (ms, median of {repeats})",
                ["ranks", "dense f+b", "tucker f+b", "+proj+step", "ratio", "FLOP ratio",
                 "ratio/FLOP", "other"], rows)
    return res, checks


# -- torch -------------------------------------------------------------------------------------
def torch_model(specs):
    """torch.nn.Sequential of refdlrt layer specs (conv, relu, maxpool, flatten, linear)."""
    nn = torch.nn
    make = {"conv": lambda a: nn.Conv2d(a["c_in"], a["c_out"], a["k"], padding=a["padding"]),
            "linear": lambda a: nn.Linear(a["n_in"], a["n_out"]), "relu": lambda a: nn.ReLU(),
            "maxpool": lambda a: nn.MaxPool2d(a["k"]), "flatten": lambda a: nn.Flatten()}
    return nn.Sequential(*(make[s.kind](s.args) for s in specs))


def section_torch(data, quick):
    if torch is None:
        print("\n== torch: torch not installed, skipped")
        return None, []
    tr = Trainer(TrainConfig(model="lenet5", method="dense"), data)
    net = torch_model(tr.specs)
    with torch.no_grad():  # same initial weights
        for m, ly in zip([m for m in net if hasattr(m, "weight")],
                         [ly for ly in tr.layers if "w" in ly.params], strict=True):
            m.weight.copy_(torch.from_numpy(ly.params["w"]))
            m.bias.copy_(torch.from_numpy(ly.params["b"]))
    xb, yb, lr = tr.data.x_train[:64], tr.data.y_train[:64], tr.cfg.lr
    xt, yt = torch.from_numpy(xb.copy()), torch.from_numpy(yb.astype(np.int64))
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=tr.cfg.momentum)

    def ours_step():
        t0 = time.perf_counter()
        tr.train_step(xb, yb, lr)
        return time.perf_counter() - t0

    def torch_step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(3):
        ours_step(), torch_step()
    repeats = 5 if quick else 30
    with OtherLoad() as load:
        s = np.array([(ours_step(), torch_step()) for _ in range(repeats)])
    o, t = 1e3 * np.median(s, axis=0)
    res = dict(refdlrt_ms=o, torch_ms=t, ratio=o / t, other=load.share, torch=torch.__version__)
    print_table(f"torch: one dense LeNet5 step, batch 64, float32 (ms, median of {repeats})",
                ["refdlrt", "torch", "ratio", "target", "other"],
                [[f"{o:.2f}", f"{t:.2f}", f"{o / t:.2f}", "<= 1.5", f"{load.share:.0%}"]])
    return res, [check("torch: refdlrt / torch, dense LeNet5 step", o / t, 1.5, load.share)]


# -- memory ------------------------------------------------------------------------------------
def memory_child(spec: str, quick: bool) -> int:
    """In a fresh process: tracemalloc peaks (MiB) of one epoch's steps and its evaluation."""
    model, method = spec.split(",")
    tr = Trainer(TrainConfig(model=model, method=method, epochs=1,
                             train_size=256 if quick else 2000), load_data(quick))
    peaks, evaluate = {}, tr.evaluate

    def traced_evaluate(*a, **kw):  # run_epoch evaluates once, after the training steps
        peaks.setdefault("train", tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        return evaluate(*a, **kw)

    tr.evaluate = traced_evaluate
    with OtherLoad() as load:
        tracemalloc.start()
        tr.run_epoch()
        peaks["eval"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps(dict(train_mib=peaks["train"] / 2**20, eval_mib=peaks["eval"] / 2**20,
                          images=len(tr.data.y_train), other=load.share)))
    return 0


def section_memory(quick):
    res, rows = {}, []
    for model in MODELS:
        for method in ("dense", "tdlrt"):
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(ARGS.threads),
                   "--memory-child", f"{model},{method}"] + (["--quick"] if quick else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                raise RuntimeError(f"memory child {model}/{method} failed:\n{out.stderr[-2000:]}")
            r = res[f"{model}/{method}"] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([model, method, f"{r['train_mib']:.1f}", f"{r['eval_mib']:.1f}",
                         f"{r['other']:.0%}"])
    images = next(iter(res.values()))["images"]
    print_table(f"memory: tracemalloc peak of one epoch, {images} images (MiB)",
                ["model", "method", "train steps", "evaluation", "other"], rows)
    return res, []


# -- conv --------------------------------------------------------------------------------------
def bench_conv_module():
    """benchmarks/bench_conv.py, imported with its own command line (it parses at import)."""
    argv = sys.argv
    sys.argv = ["bench_conv.py", "--threads", str(ARGS.threads)]
    try:
        import bench_conv
    finally:
        sys.argv = argv
    return bench_conv


def section_conv(quick):
    if torch is None:
        print("\n== conv: torch not installed, skipped")
        return None, []
    bc, rng = bench_conv_module(), np.random.default_rng(0)
    N, H = (8, 8) if quick else (128, 32)
    res, rows, checks = {}, [], []
    for dtype, target, repeats in ((np.float32, 1.5, 7), (np.float64, 1.1, 5)):
        with OtherLoad() as load:
            _, tot = bc.time_case(N, 64, 64, H, 3, 1, dtype, 2 if quick else repeats, rng)
        name = np.dtype(dtype).name
        ours, theirs = 1e3 * tot
        res[name] = dict(ours_ms=ours, torch_ms=theirs, ratio=ours / theirs, other=load.share)
        rows.append([name, f"{ours:.1f}", f"{theirs:.1f}", f"{ours / theirs:.2f}", f"<= {target}",
                     f"{load.share:.0%}"])
        checks.append(check(f"conv: ours / torch f+b, {name}", ours / theirs, target, load.share))
    print_table(f"conv2d f+b, N={N}, 64->64, {H}x{H}, 3x3, pad 1 (ms, medians)",
                ["dtype", "ours", "torch", "ratio", "target", "other"], rows)
    res["weight_grad"] = weight_grad_routes(N, H, 2 if quick else 7, rng)
    return res, checks


def weight_grad_routes(N, H, repeats, rng) -> dict:
    """The kernel gradient alone for 64 input and 16 output channels (a K-step's reduced
    gradient, or a matrix-DLRT projection): the two routes of ``conv2d_weight_grad``, patches of
    x and patches of dy (the one it takes here), called directly, and torch; information, no
    target."""
    from refdlrt.ops.conv_patches import _geometry
    from refdlrt.ops.conv_weight_grad import (
        _dw_by_patches_of_x,
        _dw_by_transposed_patches,
        conv2d_weight_grad,
    )

    x = rng.standard_normal((N, 64, H, H), dtype=np.float32)
    dy = rng.standard_normal((N, 16, H, H), dtype=np.float32)
    w = np.zeros((16, 64, 3, 3), np.float32)
    g = _geometry(x, w, None, 1, 1, 1)
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    wt = torch.from_numpy(w).requires_grad_()
    runs = {"patches of x": lambda: _dw_by_patches_of_x(dy, x, g),
            "patches of dy": lambda: _dw_by_transposed_patches(dy, x, g),
            "torch": lambda: torch.nn.functional.conv2d(xt, wt, padding=1).backward(dyt)}
    np.testing.assert_allclose(conv2d_weight_grad(x, dy, 3, padding=1), _dw_by_patches_of_x(dy, x, g),
                               rtol=1e-3, atol=1e-2)  # the routes agree (float32 sums of 10^5 terms)
    with OtherLoad() as load:
        for f in runs.values():
            f()  # warm-up
        samples = {k: [] for k in runs}
        for _ in range(repeats):
            for k, f in runs.items():
                wt.grad = None
                t0 = time.perf_counter()
                f()
                samples[k].append(time.perf_counter() - t0)
    ms = {k: median_ms(v) for k, v in samples.items()}
    print_table(f"kernel gradient alone, N={N}, 64 -> 16 channels, {H}x{H}, 3x3, float32 (ms)",
                ["route", "ms", "vs torch", "other"],
                [[k, f"{v:.1f}", f"{v / ms['torch']:.2f}", f"{load.share:.0%}"] for k, v in ms.items()])
    return dict(ms=ms, other=load.share)


# -- main --------------------------------------------------------------------------------------
def machine_info() -> dict:
    if torch is not None:
        blas = bench_conv_module().blas_info()
    else:
        try:
            b = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
            blas = f"{b.get('name')} {b.get('version')} (numpy build info)"
        except (TypeError, KeyError):
            blas = "unknown"
    return dict(cpus=os.cpu_count(), threads=ARGS.threads, python=sys.version.split()[0],
                numpy=np.__version__, blas=blas, torch=torch.__version__ if torch else None,
                env={k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")})


def main() -> int:
    if ARGS.memory_child:
        return memory_child(ARGS.memory_child, ARGS.quick)
    command, started = list(sys.argv), time.perf_counter()
    if torch is not None:
        torch.set_num_threads(ARGS.threads)
    info = machine_info()
    print(f"cpus {info['cpus']}, threads {info['threads']}, python {info['python']}, numpy "
          f"{info['numpy']}, torch {info['torch'] or 'not installed'}\nnumpy BLAS: {info['blas']}"
          + ("\n--quick: tiny sizes, the numbers mean nothing" if ARGS.quick else ""), flush=True)
    quick, only = ARGS.quick, ARGS.only
    data = load_data(quick) if {"steps", "settled", "breakdown", "torch"} & set(only) else None
    results, checks, trainers = {}, [], {}
    if "steps" in only:
        results["steps"], c, trainers = section_steps(data, quick)
        checks += c
    runs = dict(settled=lambda: section_settled(data, quick),
                breakdown=lambda: section_breakdown(data, quick, trainers),
                layer=lambda: section_layer(quick), torch=lambda: section_torch(data, quick),
                memory=lambda: section_memory(quick), conv=lambda: section_conv(quick))
    for name in SECTIONS[1:]:
        if name in only:
            results[name], c = runs[name]()
            checks += c
    took = time.perf_counter() - started
    print_table(f"summary ({took:.0f} s; other = share of the CPUs used by other processes)",
                ["quantity", "measured", "target", "ok?", "other"],
                [[c["quantity"], c["fmt"].format(c["measured"]),
                  "<= " + c["fmt"].format(c["target"]), "yes" if c["ok"] else "NO",
                  f"{c['other']:.0%}"] for c in checks])
    doc = dict(command=command, commit=git_commit(), quick=quick, seconds=took,
               timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=info, summary=[{k: v for k, v in c.items() if k != "fmt"} for c in checks],
               results=results)
    os.makedirs(os.path.dirname(os.path.abspath(ARGS.json)), exist_ok=True)
    with open(ARGS.json, "w") as f:
        json.dump(doc, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    print(f"wrote {ARGS.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
