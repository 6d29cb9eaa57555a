"""Claim 9: the CuPy backend reproduces the NumPy results (claims 3, 4, 5 and 8).

Claim: with a GPU present, the descent, approximation, exactness and training claims hold when
run with CuPy arrays, and their trajectories agree with NumPy's: the losses of the descent run,
the approximation errors of experiments (a) and (c) and the norms of the exactness steps (all
float64) to the float64 ``rtol`` of the tolerance table; the first training step's loss (the
trainer computes in float32) to the float32 ``rtol``. Without a GPU the claim is SKIPPED (not a
failure).
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import gpu_available, namespace
from ..tolerances import tolerance
from ..training.datasets import load_embedded_mnist
from . import Check, ClaimResult

NAME = "gpu"
CLAIM = ("With a GPU, claims 3, 4, 5 and 8 hold on CuPy and their trajectories agree with NumPy's "
         "to the float64 rtol (training: first-step loss to the float32 rtol); without one: "
         "skipped.")
COMPARED = ("descent", "approximation", "exactness")


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return np.inf
    scale = max(float(np.max(np.abs(a))), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def compare_backends(xp_ref, xp_new, *, quick: bool, seed: int, out: str, names=COMPARED,
                     training: bool = True):
    """Run the compared claims (``names``, plus the training claim and a one-step training
    comparison when ``training``) on both array libraries; return (checks, details)."""
    from . import run_claim
    from .training import QUICK, train_one

    checks, details = [], {}
    for name in tuple(names) + (("training",) if training else ()):
        res = run_claim(name, quick=quick, seed=seed, xp=xp_new, out=os.path.join(out, "gpu"))
        checks.append(Check(f"{name} on the second backend: checks that fail",
                            sum(not c["ok"] for c in res.details.get("checks", [])) +
                            int("error" in res.details), 0))
        if name == "training":
            continue
        ref = run_claim(name, quick=quick, seed=seed, xp=xp_ref, out=os.path.join(out, "gpu_ref"))
        diff = _rel_diff(ref.details.get("trace", [np.nan]), res.details.get("trace", [np.inf]))
        checks.append(Check(f"{name}: max relative difference of the trajectories", diff,
                            tolerance(np.float64).rtol))
        details[name] = dict(difference=diff)
    if not training:
        return checks, details
    ds = load_embedded_mnist(n_train=64, n_test=16, seed=seed)
    cfg = dict(QUICK, epochs=1)
    first = [train_one("tdlrt", 0.1, seed, ds, cfg, backend=b, max_steps=1)["losses"][0]
             for b in ("numpy", "cupy" if xp_new is not np else "numpy")]
    checks.append(Check("training: first-step loss, relative difference", abs(first[0] - first[1])
                        / abs(first[0]), tolerance(np.float32).rtol))
    details["training_first_loss"] = first
    return checks, details


def run(*, quick: bool, seed: int, xp, out: str) -> ClaimResult:
    if not gpu_available():
        return ClaimResult.skipped(NAME, CLAIM, "no GPU (refdlrt.backend.gpu_available() is False)")
    cupy = namespace("cupy")
    checks, details = compare_backends(np, cupy, quick=quick, seed=seed, out=out)
    return ClaimResult.from_checks(NAME, CLAIM, checks, details)
