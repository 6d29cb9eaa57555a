"""Reproduce the README's training table: LeNet5 on the embedded MNIST split, the defaults of
``refdlrt train`` (override with --set KEY=JSON), for dense, tdlrt, matrix-dlrt and tucker-direct
at each seed's final tdlrt ranks.

    OPENBLAS_NUM_THREADS=1 python benchmarks/train_table.py --seeds 0 1 2
    OPENBLAS_NUM_THREADS=1 python benchmarks/train_table.py --seeds 0 --set lr=0.05

One run takes 1-1.5 minutes on one core (15 epochs of 8,000 images). Prints one JSON line per
run and a markdown table at the end. A run that diverges (NaN/Inf) is reported as such.
"""

from __future__ import annotations

import argparse
import json
import time

from refdlrt.training.datasets import load_embedded_mnist
from refdlrt.training.trainer import TrainConfig, Trainer, TrainingDiverged


def run(ds, **kw) -> dict:
    tr = Trainer(TrainConfig(**kw), ds)
    t0, row, status = time.perf_counter(), None, "ok"
    try:
        for _ in range(tr.cfg.epochs):
            row = tr.run_epoch()
        if row["test_accuracy"] <= 0.12:  # 10 classes: chance is 10 %
            status = "stalled at chance"
    except TrainingDiverged as e:
        status = f"diverged ({e})"
    out = dict(kw, status=status, seconds=round(time.perf_counter() - t0, 1))
    if row is not None and not status.startswith("diverged"):
        out.update(test_accuracy=row["test_accuracy"], train_loss=row["train_loss"],
                   lowrank_param_fraction=row["lowrank_param_fraction"],
                   conv_compression=row["conv_compression"], ranks=row["ranks"])
    print(json.dumps(out), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["dense", "tdlrt", "tucker-direct", "matrix-dlrt"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="TrainConfig overrides for every run, e.g. lr=0.05 tau=0.15")
    args = ap.parse_args(argv)
    common = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    ds = load_embedded_mnist()
    rows = []
    for seed in args.seeds:
        tdlrt = None
        for method in args.methods:
            kw = dict(common, method=method, seed=seed)
            if method == "tucker-direct":
                if tdlrt is None or "ranks" not in tdlrt:
                    print(f"# seed {seed}: tucker-direct needs a finished tdlrt run first; skipped")
                    continue
                kw["ranks"] = tdlrt["ranks"]  # the same final ranks as TDLRT's run
            r = run(ds, **kw)
            tdlrt = r if method == "tdlrt" else tdlrt
            rows.append(r)
    print("\n| method | seed | test accuracy | params kept | conv compression | final ranks | status |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "test_accuracy" in r:
            print(f"| {r['method']} | {r['seed']} | {100 * r['test_accuracy']:.2f} % | "
                  f"{100 * r['lowrank_param_fraction']:.1f} % | {100 * r['conv_compression']:.0f} % | "
                  f"{r['ranks']} | {r['status']} |")
        else:
            print(f"| {r['method']} | {r['seed']} | – | – | – | {r.get('ranks', '')} | {r['status']} |")


if __name__ == "__main__":
    main()
