#!/usr/bin/env bash
# One prepared GPU check, under 5 minutes: the suite's GPU tests, the validation on CuPy, and the
# GPU benchmark against PyTorch/cuDNN. Run from the repository root on a machine with an NVIDIA
# GPU, after installing CuPy for its CUDA version:
#   CUDA 12.x: pip install -e ".[gpu]"        (cupy-cuda12x)
#   CUDA 13.x: pip install -e ".[gpu-cuda13]" (cupy-cuda13x)
# (`nvidia-smi` prints the driver's CUDA version.) Results go to ${OUT:-gpu_check_out}/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
status=0
python - <<'PY' || { echo "no usable GPU / CuPy: stop"; exit 2; }
import cupy, refdlrt.backend as b
assert b.gpu_available(), "refdlrt.backend.gpu_available() is False"
p = cupy.cuda.runtime.getDeviceProperties(0)
print("GPU:", p["name"].decode(), "| CuPy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
PY
echo "== GPU tests (CuPy variants of the suite, and CuPy vs NumPy agreement)"
timeout 150 python -m pytest -q -p no:cacheprovider -k "cupy or gpu" tests/ 2>&1 | tail -n 15 | tee "$OUT/tests.txt" || status=1
echo "== refdlrt validate --quick --backend cupy"
timeout 90 refdlrt validate --quick --backend cupy --out "$OUT/validate" 2>&1 | tail -n 14 | tee "$OUT/validate.txt" || status=1
echo "== benchmark (float32): conv and Tucker layer vs PyTorch/cuDNN"
timeout 60 python benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.txt" || status=1
echo "== conv routes on the GPU: im2col vs shifted GEMMs (the rule was measured on a CPU)"
timeout 60 python benchmarks/conv_routes.py --backend cupy --repeats 5 2>&1 | tee "$OUT/conv_routes.txt" || status=1
echo "gpu_check: $([ $status = 0 ] && echo all steps ran || echo a step failed), results in $OUT/"
exit $status
