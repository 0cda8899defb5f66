#!/bin/bash
# Session 7, device call 1: the automatic CUDA graphs (issue 14.7): their tests and the host-launched benchmark; the
# AdaptivFloat-8 tile sweep (issue 13); the other GPU tests. Run from the repository root: bash THIS_FILE
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
echo "== tests/test_cuda_graphs.py"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tail -25
echo "== bench_gpu_host_launch.py"
timeout 140 python3 benchmarks/bench_gpu_host_launch.py 2>&1 | tail -25
echo "== session7_af8_sweep.py"
timeout 140 python3 benchmarks/edgebert_runs/session7_af8_sweep.py 2>&1 | tail -25
echo "== GPU kernel tests, CUDA span tests"
timeout 130 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_kernel.py "tests/test_adaptive_span.py" -k "not interpreter" 2>&1 | tail -8
} 2>&1 | tee "$OUT/log.txt"
