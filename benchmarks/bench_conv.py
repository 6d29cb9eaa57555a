"""Time refdlrt's conv2d forward + backward against torch.nn.functional.conv2d.

Usage:  python benchmarks/bench_conv.py [--threads T] [--repeats R] [--only NAME] [--wait-idle S]

Both libraries run in this process with the same number of threads T (default: the
number of CPUs), set before NumPy is imported (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)
and with ``torch.set_num_threads``. Each case is timed as forward, then backward for
x, w and b (torch: autograd with a given dy), ours and torch interleaved in every
repeat so that load from other processes hits both alike; the table shows medians
after a warm-up. Prints which BLAS kernel NumPy's OpenBLAS uses (threadpoolctl when
installed, else OpenBLAS's own ``get_corename`` through ctypes) and the OPENBLAS_*
environment it saw.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for numpy and torch"
    )
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per case (0: by size)")
    p.add_argument("--only", default="", help="run only cases whose name contains this")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each case wait up to this many seconds for other processes to go quiet",
    )
    return p.parse_args()


ARGS = _parse()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np
import torch
from machine import cpu_busy_seconds  # benchmarks/ is the script's folder

from refdlrt.ops.conv import conv2d_backward, conv2d_forward

# name, N, C_in, C_out, H (= W), k, padding
CASES = [
    ("big 64->64 32x32 3x3", 128, 64, 64, 32, 3, 1),
    ("lenet c1 1->6 28x28 5x5", 128, 1, 6, 28, 5, 2),
    ("lenet c2 6->16 14x14 5x5", 128, 6, 16, 14, 5, 0),
]


def blas_info() -> str:
    """Which BLAS NumPy uses: library, version, kernel (core) name, threads."""
    try:
        from threadpoolctl import threadpool_info

        rows = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return "; ".join(
            f"{i['internal_api']} {i.get('version')} kernel={i.get('architecture')} "
            f"threads={i['num_threads']} ({os.path.basename(i['filepath'])})"
            for i in rows
        )
    except ImportError:
        pass
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    if not libs:
        return "unknown (no threadpoolctl, no bundled OpenBLAS found)"
    lib = ctypes.CDLL(libs[0])
    for suffix in ("64_", ""):
        try:
            core = getattr(lib, f"scipy_openblas_get_corename{suffix}")
            conf = getattr(lib, f"scipy_openblas_get_config{suffix}")
            nthr = getattr(lib, f"scipy_openblas_get_num_threads{suffix}")
        except AttributeError:
            continue
        core.restype = conf.restype = ctypes.c_char_p
        return f"{conf().decode()} kernel={core().decode()} threads={nthr()} (via ctypes)"
    return f"OpenBLAS at {libs[0]} (kernel name not exported)"


class OtherLoad:
    """Share of the machine's CPUs used by *other* processes between start() and stop()."""

    def start(self):
        self.busy, self.own, self.wall = (
            cpu_busy_seconds(),
            time.process_time(),
            time.perf_counter(),
        )
        return self

    def stop(self) -> float:
        busy = cpu_busy_seconds()
        if busy is None or self.busy is None:
            return float("nan")
        other = (busy - self.busy) - (time.process_time() - self.own)
        return max(0.0, other / ((time.perf_counter() - self.wall) * os.cpu_count()))


def wait_for_idle(max_wait: float, threshold: float = 0.1) -> None:
    """Wait (at most max_wait seconds) until other processes use < threshold of the CPUs."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        probe = OtherLoad().start()
        time.sleep(1.0)
        if probe.stop() < threshold:
            return


def time_case(N, C, O, H, k, pad, dtype, repeats, rng):
    """Median seconds (fwd, bwd) for ours and torch, interleaved."""
    x = rng.standard_normal((N, C, H, H)).astype(dtype)
    w = (rng.standard_normal((O, C, k, k)) / np.sqrt(C * k * k)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    Ho = H + 2 * pad - k + 1
    dy = rng.standard_normal((N, O, Ho, Ho)).astype(dtype)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    dyt = torch.from_numpy(dy)

    def ours():
        t0 = time.perf_counter()
        _, cache = conv2d_forward(x, w, b, padding=pad)
        t1 = time.perf_counter()
        conv2d_backward(dy, cache)
        return t1 - t0, time.perf_counter() - t1

    def theirs():
        xt.grad = wt.grad = bt.grad = None
        t0 = time.perf_counter()
        y = torch.nn.functional.conv2d(xt, wt, bt, padding=pad)
        t1 = time.perf_counter()
        y.backward(dyt)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(2):  # warm-up
        ours(), theirs()
    samples = np.array(
        [(ours(), theirs()) for _ in range(repeats)]
    )  # R, 2 (ours, torch), 2 (fwd, bwd)
    return np.median(samples, axis=0), np.median(samples.sum(axis=2), axis=0)


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    env = {k: os.environ.get(k, "<unset>") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"threads: numpy/OpenBLAS {ARGS.threads}, torch {torch.get_num_threads()}; env {env}")
    print(f"numpy BLAS: {blas_info()}")
    rng = np.random.default_rng(0)
    head = (
        f"{'case':26s} {'dtype':7s} {'ours fwd':>9s} {'ours f+b':>9s} {'torch fwd':>9s} "
        f"{'torch f+b':>9s} {'ratio':>6s} {'other':>6s}"
    )
    print(head + "\n" + "-" * len(head))
    start = time.perf_counter()
    for name, N, C, O, H, k, pad in CASES:
        if ARGS.only not in name:
            continue
        for dtype in (np.float32, np.float64):
            big = C * O * H * H >= 2**20
            repeats = ARGS.repeats or (5 if big and dtype == np.float64 else 7 if big else 21)
            wait_for_idle(ARGS.wait_idle)
            load = OtherLoad().start()
            per, tot = time_case(N, C, O, H, k, pad, dtype, repeats, rng)
            other = load.stop()
            (of, _), (tf, _) = per
            print(
                f"{name:26s} {np.dtype(dtype).name:7s} {of * 1e3:9.1f} {tot[0] * 1e3:9.1f} "
                f"{tf * 1e3:9.1f} {tot[1] * 1e3:9.1f} {tot[0] / tot[1]:6.2f} {other:6.0%}",
                flush=True,
            )
    took = time.perf_counter() - start
    print(
        "(ms, medians; ratio = ours / torch for forward + backward; other = share of the CPUs\n"
        f" used by other processes meanwhile, which slows both sides unevenly; {took:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
