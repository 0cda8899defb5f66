#!/bin/bash
# Session 7, device call 2: call 1 failed everywhere with CUDA index asserts / illegal addresses, even in plain torch
# code that ran on the H100 before. Is the machine at fault or our package? Plain torch first, then after importing it.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version,ecc.errors.uncorrected.volatile.total,ecc.errors.corrected.volatile.total,retired_pages.pending,remapped_rows.pending,remapped_rows.failure --format=csv
cat > /tmp/plain.py <<'PY'
import sys, torch
if len(sys.argv) > 1:
    import modeling_ultrafastbert  # noqa: F401
    print("imported modeling_ultrafastbert")
torch.manual_seed(0)
x = torch.randn(1, 4095, 768, device="cuda").double()
m = torch.linspace(0, 3, 127, device="cuda", dtype=torch.float64)
c = torch.bucketize(x.abs(), m)
print("bucketize min/max", c.min().item(), c.max().item())
s = m[c.clamp(max=126)].sum().item()
cc = torch.bucketize(x.abs().cpu(), m.cpu())
print("index ok", s, "equal to CPU:", torch.equal(c.cpu(), cc))
a = torch.randn(4096, 4096, device="cuda"); print("matmul ok", (a @ a).float().norm().item() > 0)
PY
echo "== plain torch"; timeout 60 python3 /tmp/plain.py 2>&1 | tail -4
echo "== after importing the package"; timeout 60 python3 /tmp/plain.py x 2>&1 | tail -4
echo "== test_cuda_graphs, blocking launches"
CUDA_LAUNCH_BLOCKING=1 timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | grep -v "^  File\|^Extension" | tail -30
echo "== test_gpu_kernel"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_gpu_kernel.py 2>&1 | grep -v "^  File\|^Extension" | tail -30
} 2>&1 | tee "$OUT/log.txt"
