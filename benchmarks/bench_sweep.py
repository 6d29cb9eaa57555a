"""Time a sweep on Dask (single-threaded workers, one per core) against the same cells run one
after another in one process with the BLAS library's default threading.

Usage:  python benchmarks/bench_sweep.py [--workers 2] [--methods dense tdlrt] [--seeds 0 1]
                                         [--epochs 2] [--train-size 4000] [--wait-idle S]

Both sides are ``refdlrt sweep`` commands in a fresh process each, timed from start to exit
(imports and, for Dask, starting the local cluster included), on the embedded MNIST split:

    sequential: refdlrt sweep --workers 0 --threads 0   (one cell after another, BLAS default)
    parallel:   refdlrt sweep --workers W --threads 1   (W worker processes, 1 BLAS thread each)
    and, unless --no-one-thread, sequential with one BLAS thread (--workers 0 --threads 1),
    which separates the gain of running cells in parallel from that of BLAS threading.

Prints the load (1-minute load average, and the share of the CPUs that *other* processes used
during each side, from /proc/stat) beside the times, the ratio, and whether the two sweeps
agree on the test accuracies (they need not agree bit for bit: the thread counts differ).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time

from machine import cpu_busy_seconds  # benchmarks/ is the script's folder


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_sweep(out, grid, extra) -> dict:
    """Run one sweep command; wall seconds, its CPU seconds, the others' share of the CPUs."""
    cmd = [sys.executable, "-m", "refdlrt.cli", "sweep", "--out", out, *grid, *extra,
           "--no-progress", "--no-cell-plots"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    load = os.getloadavg()[0]
    busy0, own0, t0 = cpu_busy_seconds(), children_cpu(), time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench_sweep: {' '.join(cmd)} failed:\n{p.stderr}")
    own = children_cpu() - own0
    other = None
    if busy0 is not None:
        other = max(0.0, (cpu_busy_seconds() - busy0 - own) / (wall * os.cpu_count()))
    with open(os.path.join(out, "sweep.csv")) as f:
        acc = {r["id"]: r["test_accuracy"] for r in csv.DictReader(f)}
    return dict(wall=wall, cpu=own, other=other, load=load, acc=acc)


def wait_for_idle(max_wait: float, threshold: float = 0.15):
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        b0, t0 = cpu_busy_seconds(), time.perf_counter()
        time.sleep(2.0)
        if b0 is None or (cpu_busy_seconds() - b0) / ((time.perf_counter() - t0) * os.cpu_count()) < threshold:
            return


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--methods", nargs="+", default=["dense", "tdlrt"])
    ap.add_argument("--seeds", nargs="+", default=["0", "1"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--no-one-thread", action="store_true",
                    help="skip the third run: sequential with one BLAS thread")
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="wait up to this many seconds for other processes to go quiet first")
    args = ap.parse_args(argv)
    grid = ["--grid", f"method={','.join(args.methods)}", f"seed={','.join(args.seeds)}",
            "--set", f"epochs={args.epochs}", f"train_size={args.train_size}"]
    n = len(args.methods) * len(args.seeds)
    print(f"bench_sweep: {n} cells (LeNet5, embedded MNIST, {args.train_size} training images, "
          f"{args.epochs} epochs), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        wait_for_idle(args.wait_idle)
        seq = timed_sweep(os.path.join(tmp, "seq"), grid, ["--workers", "0", "--threads", "0"])
        wait_for_idle(args.wait_idle)
        par = timed_sweep(os.path.join(tmp, "par"), grid,
                          ["--workers", str(args.workers), "--threads", "1"])
        one = None
        if not args.no_one_thread:
            wait_for_idle(args.wait_idle)
            one = timed_sweep(os.path.join(tmp, "one"), grid, ["--workers", "0", "--threads", "1"])
    print("| run | wall s | CPU s (its processes) | load avg (1 min, before) | other processes |")
    print("|---|---:|---:|---:|---:|")
    runs = [("sequential, default BLAS threads", seq),
            (f"Dask, {args.workers} workers x 1 thread", par)]
    runs += [("sequential, 1 BLAS thread", one)] if one else []
    for name, r in runs:
        other = "n/a" if r["other"] is None else f"{100 * r['other']:.0f} %"
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load']:.2f} | {other} |")
    print(f"speed-up (sequential, default threads / Dask): {seq['wall'] / par['wall']:.2f}x "
          f"(target >= 1.6x)")
    if one:
        print(f"speed-up (sequential, 1 thread / Dask): {one['wall'] / par['wall']:.2f}x")
    same = sum(abs(float(seq["acc"][k]) - float(par["acc"][k])) <= 0.005 for k in seq["acc"])
    print(f"test accuracies within 0.5 points on {same} of {n} cells "
          f"(the thread counts differ, so the bits may too)")


if __name__ == "__main__":
    main()
