#!/bin/bash
# Session 7, device call 2 (after call 1 passed): cuda_graphs="auto" made the default in this copy (the device's
# working tree only), then every test file that runs models on CUDA, so each repeated eval call there goes through the
# automatic graphs; then the host-launched benchmark once more. Run from the repository root: bash THIS_FILE
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
sed -i 's/    cuda_graphs: str = "off"/    cuda_graphs: str = "auto"/' modeling_ultrafastbert/configuration_ultrafastbert.py
python3 -c "from modeling_ultrafastbert import UltraFastBertConfig as C; print('default cuda_graphs:', C().cuda_graphs)"
echo "== CUDA test files with the auto default"
timeout 320 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py tests/test_gpu_kernel.py tests/test_modeling.py tests/test_adaptive_span.py tests/test_early_exit.py -k "not interpreter and not test_config_rejects_an_unknown_mode" 2>&1 | tail -25
echo "== bench_gpu_host_launch.py (auto default)"
timeout 220 python3 benchmarks/bench_gpu_host_launch.py --compile 2>&1 | tail -16
} 2>&1 | tee "$OUT/log.txt"
