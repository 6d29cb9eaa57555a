"""The integrator of two checkouts on the same captured steps, alternated in one process.

Usage:  git worktree add /tmp/old <commit>
        python benchmarks/ab_integrator.py /tmp/old . [--model vgg_small] [--rounds 100]

Trains a TDLRT trainer (CLI defaults, this checkout's code) for one epoch on the first
``--train-size`` embedded images, then takes one more step and keeps what ``tdlrt_step`` (or, for
a matrix weight, ``matrix_step``) was given for each low-rank layer: the weight, the projector's
activations and route, the arguments, which of the two steps. A checkout without
``refdlrt/dlrt/matrix_step.py`` (before 7d1b542) takes a matrix weight's step by ``tdlrt_step``
with ``diagnostics=False``, as its trainer did.
Each checkout is imported under a package name of its own, so both live in one process and the
machine's phase, which drifts by up to 1.5x within minutes, is the same for both. Every round
takes each layer's step once per checkout (the order alternating), each through a projector built
by that checkout's own classes; the "dense" route's G is handed over already formed (the same
kernel gradient in both, not the integrator's work). Prints per layer the median ms of each, and
the median over the rounds of the ratio of the totals (second / first).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np
from checkouts import import_checkout  # benchmarks/: this script's folder


def load(name: str, root: str) -> dict:
    """The modules the step needs, from ``root``'s refdlrt imported as package ``name``."""
    init = import_checkout(name, root).__file__
    mods = {k: importlib.import_module(f"{name}.{k}")
            for k in ("dlrt.integrator", "nn.lowrank_projectors", "tensor.tucker")}
    if os.path.exists(os.path.join(os.path.dirname(init), "dlrt", "matrix_step.py")):
        mods["dlrt.matrix_step"] = importlib.import_module(f"{name}.dlrt.matrix_step")
    # the linear layers' projector: nn/matrix_projectors.py since the tenth session, before it
    # in nn/lowrank_projectors.py
    has_own = os.path.exists(os.path.join(os.path.dirname(init), "nn", "matrix_projectors.py"))
    mods["linear projector"] = (importlib.import_module(f"{name}.nn.matrix_projectors") if has_own
                                else mods["nn.lowrank_projectors"]).LowRankLinearProjector
    return mods


def capture(model: str, train_size: int) -> list:
    """One step's tdlrt_step / matrix_step arguments per low-rank layer, as plain arrays and values."""
    from layer_times import settled_trainer  # benchmarks/: this script's folder

    from refdlrt.training import trainer as trainer_mod
    from refdlrt.training.datasets import load_dataset

    tr = settled_trainer(model, "tdlrt", load_dataset("embedded"), train_size)
    seen, real = [], {name: getattr(trainer_mod, name) for name in ("tdlrt_step", "matrix_step")}

    def keeper(name):
        def keep(Y, P, lr, tau, **kw):
            route = getattr(P, "route", None)
            seen.append(dict(core=Y.core, factors=Y.factors, x=P.x, z1=P.z1, dy=P.dy, dz2=P.dz2,
                             geometry=getattr(P, "geometry", None), route=route, lr=lr, tau=tau,
                             kw=kw, G=P.dense() if route == "dense" else None, step=name))
            return real[name](Y, P, lr, tau, **kw)
        return keep

    for name in real:
        setattr(trainer_mod, name, keeper(name))
    try:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(tr.data.y_train), tr.cfg.batch_size, replace=False))
        tr.train_step(np.asarray(tr.data.x_train[idx], dtype=np.float32), tr.data.y_train[idx], tr.cfg.lr)
    finally:
        for name, f in real.items():
            setattr(trainer_mod, name, f)
    return seen


def step(mods: dict, c: dict):
    """One step (``c["step"]``) of checkout ``mods`` on capture ``c``; returns its seconds."""
    lp, tucker, integrator = mods["nn.lowrank_projectors"], mods["tensor.tucker"], mods["dlrt.integrator"]
    if c["route"] is None:
        P = mods["linear projector"](c["x"], c["z1"], c["dy"], c["dz2"], c["factors"])
    else:
        P = lp.TuckerConvProjector(c["x"], c["z1"], c["dy"], c["dz2"], c["factors"], c["geometry"],
                                   route=c["route"])
        if c["G"] is not None:
            P._G = c["G"]  # formed outside the clock
    Y = tucker.Tucker(c["core"], c["factors"])
    if c["step"] == "matrix_step" and "dlrt.matrix_step" not in mods:  # a checkout before it
        t0 = time.perf_counter()
        integrator.tdlrt_step(Y, P, c["lr"], c["tau"], diagnostics=False, **c["kw"])
        return time.perf_counter() - t0
    f = mods["dlrt.matrix_step"].matrix_step if c["step"] == "matrix_step" else integrator.tdlrt_step
    t0 = time.perf_counter()
    f(Y, P, c["lr"], c["tau"], **c["kw"])
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs=2, help="the two checkouts (first, second)")
    p.add_argument("--model", default="vgg_small", choices=("lenet5", "vgg_small"))
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--train-size", type=int, default=3072)
    a = p.parse_args()
    caps = capture(a.model, a.train_size)
    mods = [load(f"refdlrt_ab{i}", root) for i, root in enumerate(a.roots)]
    for m in mods:  # warm-up
        for c in caps:
            step(m, c)
    per = np.zeros((a.rounds, 2, len(caps)))
    for r in range(a.rounds):
        for j in ((0, 1) if r % 2 else (1, 0)):
            per[r, j] = [step(mods[j], c) for c in caps]
    tot = per.sum(axis=2)
    print(f"{a.model}: step ms, medians of {a.rounds} rounds; first = {a.roots[0]}, second = {a.roots[1]}")
    for k, c in enumerate(caps):
        print(f"  layer {k} {tuple(c['core'].shape)}, route {c['route'] or 'linear'}, {c['step']}: "
              f"{1e3 * np.median(per[:, 0, k]):.2f} / {1e3 * np.median(per[:, 1, k]):.2f}")
    print(f"  total {1e3 * np.median(tot[:, 0]):.2f} / {1e3 * np.median(tot[:, 1]):.2f}, "
          f"median ratio second / first {np.median(tot[:, 1] / tot[:, 0]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
