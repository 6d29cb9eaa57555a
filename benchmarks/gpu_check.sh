#!/usr/bin/env bash
# One prepared GPU check, under 5 minutes: the suite's GPU tests, the validation on CuPy, and the
# GPU benchmark against PyTorch/cuDNN. Run from anywhere on a machine with an NVIDIA GPU, after
# installing refdlrt with CuPy for the driver's CUDA version (`nvidia-smi` prints it, top right):
#   CUDA 12.x: pip install -e ".[gpu,test]"        (cupy-cuda12x)
#   CUDA 13.x: pip install -e ".[gpu-cuda13,test]" (cupy-cuda13x)
# Without an install, the checkout is put on PYTHONPATH (the commands run as `python -m refdlrt`).
# PYTHON picks the interpreter (default: python3, else python). Results go to
# ${OUT:-gpu_check_out}/ (at most 8 files: a log per step, the benchmark's JSON, the validation's
# report). Each step has its own time limit; together they come to 5 minutes.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # relative to where it was called from, before the cd below
PY=${PYTHON:-$(command -v python3 || command -v python)}
[ -n "$PY" ] && PY=$(command -v "$PY") || { echo "no python3 / python found"; exit 2; }
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
timeout 12 "$PY" - <<'PY' 2>&1 | tee "$OUT/machine.txt" || { echo "no usable GPU / CuPy (or this probe took over 12 s): stop"; exit 2; }
import sys
import cupy, numpy, refdlrt, refdlrt.backend as b
assert b.gpu_available(), "refdlrt.backend.gpu_available() is False"
p = cupy.cuda.runtime.getDeviceProperties(0)
print("GPU:", p["name"].decode(), "| CuPy", cupy.__version__, "| CUDA runtime",
      cupy.cuda.runtime.runtimeGetVersion(), "| driver", cupy.cuda.runtime.driverGetVersion())
print("Python", sys.version.split()[0], "| NumPy", numpy.__version__, "| refdlrt", refdlrt.__file__)
try:
    import torch
    print("torch", torch.__version__, "| CUDA:", torch.cuda.is_available())
except ImportError:
    print("torch: not installed (the cuDNN columns stay empty)")
PY
# pytest-xdist, where installed, spreads the tests over 4 processes sharing the GPU
XDIST=$("$PY" -c "import xdist" 2>/dev/null && echo "-n 4")
TIMEOUT=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout 60")

echo "== GPU tests (CuPy variants of the suite, and CuPy vs NumPy agreement)"
# Time limits, 300 s in all with the probe's 12 (tests/test_gpu.py checks the sum): 95 s here
# (223 tests took 39 s on an H200 at 713c123; the suite now selects 300). Of the others only the
# validation's claims (93 s) were timed whole at 713c123; the benchmark's sections took 22 s, its
# A/B's 10 s, and the profile is an epoch of 16 steps, an evaluation, 20 warm-up and 20 profiled
# steps (63 ms a step under cProfile there): their margins are estimates, untested on a GPU
timeout 95 "$PY" -m pytest -q -p no:cacheprovider $XDIST $TIMEOUT -k "cupy or gpu" tests/ \
    >"$OUT/tests.txt" 2>&1 || status=1
tail -n 25 "$OUT/tests.txt"

echo "== refdlrt validate --quick --backend cupy"
VAL=$(mktemp -d)  # its plots and JSON stay out of OUT (8 files at most there)
timeout 110 "$PY" -m refdlrt validate --quick --backend cupy --out "$VAL" \
    >"$OUT/validate.txt" 2>&1 || status=1
tail -n 14 "$OUT/validate.txt"
cp "$VAL/report.md" "$OUT/validate_report.md" 2>/dev/null

echo "== benchmark (float32): conv, Tucker layer and training steps vs PyTorch/cuDNN"
timeout 38 "$PY" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 \
    | tee "$OUT/bench.txt" || status=1

echo "== the same layer and steps with every SVD on the GPU (A/B of the host-SVD rule)"
timeout 20 "$PY" benchmarks/bench_gpu.py --only layer,steps --host-svd-max 0 2>&1 \
    | tee -a "$OUT/bench.txt" || status=1

echo "== conv routes on the GPU: im2col vs shifted GEMMs (the rule: never shifted on CuPy)"
timeout 15 "$PY" benchmarks/conv_routes.py --backend cupy --repeats 5 2>&1 \
    | tee "$OUT/conv_routes.txt" || status=1
echo "== where a TDLRT step spends its time on the GPU (cProfile, vgg_small)"
timeout 10 "$PY" benchmarks/profile_gpu_step.py >"$OUT/profile.txt" 2>&1 || status=1
head -n 45 "$OUT/profile.txt"
echo "gpu_check: $([ $status = 0 ] && echo all steps ran || echo a step failed), results in $OUT/"
exit $status
