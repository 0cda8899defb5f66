#!/usr/bin/env bash
# Run on the GPU machine from the repository root: GPU tests, compute-sanitizer memcheck of one small run, benchmark.
# Logs go to $OUT (or ./gpu_logs).
set -uo pipefail
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/env.log"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/env.log"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu_kernel.py -rs 2>&1 | tee "$OUT/pytest_gpu.log"
python3 benchmarks/bench_fff_layer_gpu.py "$@" 2>&1 | tee "$OUT/bench.log"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 benchmarks/memcheck_fff_triton.py 2>&1 | tail -n 25 | tee "$OUT/memcheck.log"
echo "memcheck exit: ${PIPESTATUS[0]}" | tee -a "$OUT/memcheck.log"
