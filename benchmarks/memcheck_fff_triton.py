"""One small run of every Triton FFF strategy (odd sizes, non-contiguous x), for compute-sanitizer memcheck.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python3 benchmarks/memcheck_fff_triton.py
"""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_ultrafastbert import fff_triton_kernel as tk  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch  # noqa: E402

for dtype in (torch.float32, torch.bfloat16):
    for tokens, hidden, depth, trees, strategy in ((301, 200, 11, 1, "grouped"), (301, 200, 11, 1, "walk"),
                                                   (301, 200, 11, 1, "phased"), (45, 72, 4, 3, "walk"),
                                                   (45, 72, 4, 3, "phased")):
        nodes = 2 ** (depth + 1) - 1
        x = torch.randn(hidden, tokens, device="cuda").t().to(dtype)  # non-contiguous view
        in_w = (torch.randn(trees, nodes, hidden, device="cuda") / math.sqrt(hidden)).to(dtype)
        in_b = (torch.randn(trees, nodes, device="cuda") * 0.1).to(dtype)
        out_w = torch.randn(trees, nodes, hidden, device="cuda").to(dtype)
        residual = torch.randn(tokens, hidden, device="cuda").to(dtype)
        y = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual)
        ref = fff_conditional_torch(x.float(), in_w.float(), in_b.float(), out_w.float()) + residual.float()
        torch.cuda.synchronize()
        err = ((y.float() - ref).norm() / ref.norm()).item()
        print(f"{dtype} T={tokens} H={hidden} D={depth} K={trees} {strategy}: rel err {err:.2e}")
print("memcheck run finished")
