"""TDLRT / dense step time of vgg_small at several channel widths: where does low rank pay?

Usage:  python benchmarks/width_scaling.py [--widths 32,32,64,64 64,64,128,128] [--steps 20]
                                          [--train-size 3072] [--json out.json]

For each width set (``refdlrt train --widths``), trains a dense and a TDLRT trainer (CLI
defaults otherwise: tau = 0.2, batch 64, float32) for one epoch on the first ``--train-size``
embedded images, so that the TDLRT ranks can settle (the output shows whether they still
move), then times ``--steps`` training steps of each
on the same random batches, dense and TDLRT in turn (``ab_steps.step_seconds``). Prints per
width set the medians, the paired ratio (median of the per-batch ratios TDLRT / dense, as in
run.py), the TDLRT ranks before and after the timed steps (which are rank-adaptive too) and the
share of the low-rank layers' dense parameters kept at the end.
The default widths (32, 32, 64, 64) are the issue's target shape; the wider sets show how the
ratio moves as the layers grow toward the paper's VGG widths.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_steps import step_seconds  # noqa: E402
from layer_times import settled_trainer  # noqa: E402
from machine import git_commit  # noqa: E402

from refdlrt.training.datasets import load_dataset  # noqa: E402


def widths_arg(text: str) -> tuple:
    """'32,32,64,64' -> (32, 32, 64, 64)."""
    try:
        w = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints such as 32,32,64,64, got {text!r}")
    if not w or min(w) < 1:
        raise argparse.ArgumentTypeError(f"expected widths >= 1, got {text!r}")
    return w


def measure(widths: tuple, data, train_size: int, steps: int) -> dict:
    """Settle dense and TDLRT trainers at ``widths`` and time their steps in turn."""
    t0 = time.perf_counter()
    trainers = {m: settled_trainer("vgg_small", m, data, train_size, widths=widths)
                for m in ("dense", "tdlrt")}
    tr = trainers["tdlrt"]
    ranks_before = tr.ranks()  # the timed steps are rank-adaptive too: ranks before and after
    seconds = step_seconds(trainers, data, steps)
    d, t = (np.asarray(seconds[m]) for m in ("dense", "tdlrt"))
    return {"widths": list(widths), "train_size": train_size, "steps": steps,
            "dense_ms": 1e3 * float(np.median(d)), "tdlrt_ms": 1e3 * float(np.median(t)),
            "paired": float(np.median(t / d)), "ranks_before": ranks_before,
            "ranks_after": tr.ranks(),
            "lowrank_params_kept": tr.counts().get("lowrank_param_fraction"),  # after
            "seconds": time.perf_counter() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=widths_arg, nargs="+",
                   default=[(32, 32, 64, 64), (64, 64, 128, 128)])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--train-size", type=int, default=3072)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args()
    data = load_dataset("embedded")
    rows, commit = [], git_commit()
    print(f"vgg_small at {commit}, CLI defaults, one epoch of {a.train_size} images, then {a.steps} "
          f"steps of each in turn (ms: medians; paired: median of the per-batch ratios; ranks before "
          f"-> after the timed steps; kept: low-rank parameters after)", flush=True)
    for w in a.widths:
        r = measure(w, data, a.train_size, a.steps)
        rows.append(r)
        kept = "" if r["lowrank_params_kept"] is None else f"  kept {100 * r['lowrank_params_kept']:.1f}%"
        print(f"widths {','.join(map(str, w)):16s} dense {r['dense_ms']:7.1f}  tdlrt {r['tdlrt_ms']:7.1f}  "
              f"paired {r['paired']:.3f}{kept}  ranks {r['ranks_before']} -> {r['ranks_after']}  "
              f"({r['seconds']:.0f} s)", flush=True)
        if a.json:  # after every width set: a long run loses nothing measured
            with open(a.json, "w") as f:
                json.dump({"commit": commit, "command": sys.argv, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
