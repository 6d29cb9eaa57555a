"""Per-layer times of the dense and the TDLRT vgg_small step, taken in turn in one process.

Usage:  python benchmarks/layer_times.py [--model vgg_small] [--steps 24] [--train-size 3072]

Trains a dense and a TDLRT trainer (CLI defaults otherwise) for one epoch on the first
``--train-size`` embedded images, then takes ``--steps`` steps of each on the same batches (the
order alternating), and prints per layer the mean ms per step of its forward, its backward and,
for the low-rank layers, its update (``Trainer._lowrank_update``: projections and ``tdlrt_step``),
dense against TDLRT, then the step totals and their ratio.
"""

from __future__ import annotations

import argparse
import collections
import time

import numpy as np

from refdlrt.training.datasets import load_dataset
from refdlrt.training.trainer import TrainConfig, Trainer


def timed(f, record):
    """``f`` that calls ``record(seconds, *args)`` after each call (shared with route_times.py)."""
    def g(*args, **kw):
        t0 = time.perf_counter()
        out = f(*args, **kw)
        record(time.perf_counter() - t0, *args)
        return out
    return g


def settled_trainer(model: str, method: str, data, train_size: int, **config) -> Trainer:
    """A trainer (CLI defaults, but for ``config``: TrainConfig fields such as ``widths``) after
    one epoch on the first ``train_size`` images, set to its last epoch, where steps are still
    rank-adaptive (shared with route_times.py, ab_integrator.py and width_scaling.py)."""
    tr = Trainer(TrainConfig(model=model, method=method, epochs=1, train_size=train_size, **config),
                 data)
    tr.run_epoch()
    tr.epoch = tr.cfg.epochs - 1
    return tr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg_small", choices=("lenet5", "vgg_small"))
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--train-size", type=int, default=3072)
    a = p.parse_args()
    data = load_dataset("embedded")
    trainers = {m: settled_trainer(a.model, m, data, a.train_size) for m in ("dense", "tdlrt")}
    acc = {m: collections.defaultdict(list) for m in trainers}  # key -> seconds of each call
    for m, tr in trainers.items():
        for i, ly in enumerate(tr.layers):
            name = f"{i}:{getattr(ly, 'name', '') or type(ly).__name__}"
            for part in ("forward", "backward"):
                key = (i, name, part)
                setattr(ly, part, timed(getattr(ly, part), lambda dt, *_, k=key, t=acc[m]: t[k].append(dt)))
        tr._lowrank_update = timed(
            tr._lowrank_update,
            lambda dt, k, layer, *_, t=acc[m]: t[(k, f"{k}:{layer.name}", "update")].append(dt))
    rng, total = np.random.default_rng(1), {m: 0.0 for m in trainers}
    for s in range(a.steps):
        idx = np.sort(rng.choice(len(trainers["dense"].data.y_train), trainers["dense"].cfg.batch_size,
                                    replace=False))
        for m in (("dense", "tdlrt") if s % 2 else ("tdlrt", "dense")):
            tr = trainers[m]
            t0 = time.perf_counter()
            tr.train_step(np.asarray(tr.data.x_train[idx], dtype=np.float32), tr.data.y_train[idx],
                          tr.cfg.lr / 2)
            total[m] += time.perf_counter() - t0
    print(f"{a.model}: ms per step, mean of {a.steps}; TDLRT ranks {trainers['tdlrt'].ranks()}")
    print(f"{'layer':16s} {'part':9s} {'dense':>8s} {'tdlrt':>8s}")
    for key in sorted(set(acc["dense"]) | set(acc["tdlrt"])):
        d, t = (1e3 * sum(acc[m].get(key, ())) / a.steps for m in ("dense", "tdlrt"))
        print(f"{key[1]:16s} {key[2]:9s} {d:8.2f} {t:8.2f}")
    d, t = (1e3 * total[m] / a.steps for m in ("dense", "tdlrt"))
    print(f"step: dense {d:.1f} ms, tdlrt {t:.1f} ms, ratio {t / d:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
