#!/usr/bin/env bash
# Session 9, one device call: does session 8's compiler self-test pick a working compiler on the device machine
# (whose $CXX built libraries that crashed on any input check), which CUDA tests skip and why, and the 8-bit CPU
# kernel's work bound on the device's CPU.
set -u
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/Flags:.*avx512f.*/Flags: avx512f present/'
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
echo "CXX=${CXX:-unset}"
rm -rf ~/.cache/ultrafastbert
python3 - <<'PY'
from modeling_ultrafastbert import fff_cpu_kernel as k
print("compilers tried in order:", k._compilers())
print("is_available:", k.is_available())
PY
echo "=== CPU kernel tests"
timeout 400 python3 -m pytest -q -rs tests/test_kernel_cache.py tests/test_adaptivfloat.py 2>&1 | tail -12
echo "=== CUDA tests, skips named"
timeout 300 python3 -m pytest -q -rs tests/test_cuda_graphs.py tests/test_gpu_kernel.py tests/test_modeling.py \
  tests/test_adaptive_span.py tests/test_early_exit.py -k "not interpreter" 2>&1 | tail -12
echo "=== work bound, device CPU"
timeout 120 python3 benchmarks/bench_af8_work_bound.py --seconds 2 2>&1 | tail -10
