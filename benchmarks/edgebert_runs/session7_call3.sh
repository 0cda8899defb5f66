#!/bin/bash
# Session 7, device call 3: call 1 failed everywhere with CUDA index asserts, even in plain torch code that ran on the
# H100 before. First a plain-torch check (stop there if the machine is at fault), then call 1's work, shortened.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version,ecc.errors.uncorrected.volatile.total,remapped_rows.pending,remapped_rows.failure --format=csv
cat > /tmp/plain.py <<'PY'
import sys, torch
if len(sys.argv) > 1:
    import modeling_ultrafastbert  # noqa: F401
    print("imported modeling_ultrafastbert")
torch.manual_seed(0)
x = torch.randn(1, 4095, 768, device="cuda").double()
m = torch.linspace(0, 3, 127, device="cuda", dtype=torch.float64)
c = torch.bucketize(x.abs(), m)
s = m[c.clamp(max=126)].sum().item()
print("plain torch ok:", torch.equal(c.cpu(), torch.bucketize(x.abs().cpu(), m.cpu())))
PY
echo "== plain torch"; timeout 45 python3 /tmp/plain.py 2>&1 | tail -3 | tee /tmp/plain.log
grep -q "plain torch ok: True" /tmp/plain.log || { echo "machine at fault: stop"; exit 3; }
echo "== tests/test_cuda_graphs.py"
timeout 110 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | grep -v "^  File\|^Extension" | tail -25
echo "== bench_gpu_host_launch.py"
timeout 110 python3 benchmarks/bench_gpu_host_launch.py 2>&1 | tail -22
echo "== session7_af8_sweep.py"
timeout 45 python3 benchmarks/edgebert_runs/session7_af8_sweep.py --configs 0 2>&1 | tail -12
} 2>&1 | tee "$OUT/log.txt"
