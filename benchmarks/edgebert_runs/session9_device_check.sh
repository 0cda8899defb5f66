#!/usr/bin/env bash
# Session 9, one device call: does session 8's compiler self-test pick a working compiler on the device machine
# (whose $CXX built libraries that crashed on any input check), which CUDA tests skip and why, and the 8-bit CPU
# kernel's work bound on the device's CPU.
# Ran once, 2026-12-06, NVIDIA H100 80GB HBM3 (driver 580.159.04), 16-core Intel Xeon with AVX-512, torch
# 2.11.0+cu130, Triton 3.6.0, CXX=/opt/gcc/bin/g++ (538 s):
# - the kernel built and loaded from a fresh cache; CPU kernel tests 71 passed, 1 skipped (the Triton interpreter
#   probe: Triton 3.6 with NumPy 2.5.2), so test_8bit_kernel_rejects_bad_inputs, a SIGSEGV there in session 8, passed;
# - CUDA tests 184 passed, 2 skipped: tests/test_adaptive_span.py:502 and tests/test_early_exit.py:307, both for
#   want of the SST-2 data (../shared is not copied to the device);
# - work bound there: fp32 kernel 373.2 µs, 8-bit 216.9 µs (1.72x); all-in-L1 estimate 146.4 µs (2.55x); the kernel
#   at 67% of it.
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
