#!/bin/bash
# Session 6, device call 1: the automatic CUDA graphs (issue 14.7) on one GPU: their tests, the other GPU tests, and
# the host-launched benchmark. Run from the repository root on the device machine: bash THIS_FILE
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
echo "== tests/test_cuda_graphs.py"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -25
echo "== bench_gpu_host_launch.py"
timeout 190 python3 benchmarks/bench_gpu_host_launch.py 2>&1 | tail -25
echo "== GPU kernel tests, CUDA span tests"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_kernel.py "tests/test_adaptive_span.py" -k "not interpreter" 2>&1 | tail -8
} 2>&1 | tee "$OUT/log.txt"
