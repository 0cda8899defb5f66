"""Device diagnosis (session 8). On the H100 machine of session 8 (Ubuntu 24.04, torch 2.11.0+cu130, Python 3.12) a
TORCH_CHECK failing inside the CPU kernel's 8-bit op (an exponent bias of -200, called through torch.ops) killed Python
with SIGSEGV instead of raising; here (Debian 12, GCC 12, torch 2.13) it raises RuntimeError. This builds the library
with some flags changed, each in a fresh cache, and a minimal op that only throws, and reports which survive, plus the
compile command and what the library links.

    python3 benchmarks/edgebert_runs/session8_throw_diag.py

Result there: every variant died with SIGSEGV (rc=-11), the minimal op included; the compiler was $CXX =
/opt/gcc/bin/g++, a shell wrapper around a relocated GCC 13.3 (`g++-real -B/opt/gcc/bin/ -B/opt/gcc/lib/gcc/...`).
The same minimal op built with /usr/bin/g++ raised RuntimeError. So that toolchain builds libraries whose C++
exceptions cannot unwind into libtorch; the build now self-tests each library and moves on to the next compiler.
"""
import os, subprocess, sys, tempfile, time
VARIANTS = {
    "shipped": None,
    "no-visibility-hidden": ("-fvisibility=hidden", None),
    "no-fopenmp": ("-fopenmp", None),

}
CASE = r'''
import os, sys, torch
from modeling_ultrafastbert import fff_cpu_kernel as k
change = os.environ.get("DIAG_CHANGE")
if change:
    old, new = change.split("|")
    i = k._BASE_FLAGS.index(old)
    if new: k._BASE_FLAGS[i] = new
    else: del k._BASE_FLAGS[i]
print(k.is_available()[1][:60], k._BASE_FLAGS, flush=True)
codes = torch.zeros(1, 7, 16, dtype=torch.uint8); bias = torch.zeros(1, 7)
which = sys.argv[1]
try:
    if which == "af8":
        torch.ops.ultrafastbert.fff_forward_cpu_af8(torch.zeros(2, 16), codes, -200, bias, codes, 0)
    else:
        torch.ops.ultrafastbert.fff_forward_cpu(torch.zeros(2, 15), torch.zeros(1, 7, 16), bias, torch.zeros(1, 7, 16))
except Exception as e:
    print("raised", type(e).__name__, str(e).splitlines()[0][:100])
'''
for name, change in VARIANTS.items():
    cache = tempfile.mkdtemp()
    env = dict(os.environ, ULTRAFASTBERT_CACHE=cache, DIAG_CHANGE="" if change is None else f"{change[0]}|{change[1] or ''}")
    for which in (("af8", "fp32") if change is None else ("af8",)):
        t = time.time()
        p = subprocess.run([sys.executable, "-c", CASE, which], env=env, capture_output=True, text=True, timeout=240)
        tail = (p.stdout + p.stderr).strip().splitlines()
        print(f"{name:22s} {which:5s} rc={p.returncode} {time.time() - t:5.1f}s | " + " / ".join(l for l in tail if "raised" in l or "Fatal" in l or "flags" in l.lower())[:300], flush=True)

# a minimal op built with the same command: does any TORCH_CHECK throw survive here?
MINI = r'''
#include <torch/library.h>
#include <ATen/ATen.h>
at::Tensor ufb_diag_throw(const at::Tensor& x) { TORCH_CHECK(x.dim() == 5, "diag: want 5 dims, got ", x.dim()); return x; }
TORCH_LIBRARY(ufb_diag, m) { m.def("throw_it(Tensor x) -> Tensor"); }
TORCH_LIBRARY_IMPL(ufb_diag, CPU, m) { m.impl("throw_it", &ufb_diag_throw); }
'''
from modeling_ultrafastbert import fff_cpu_kernel as k
d = tempfile.mkdtemp()
src, out = os.path.join(d, "mini.cpp"), os.path.join(d, "mini.so")
open(src, "w").write(MINI)
for label, drop in (("mini shipped flags", None), ("mini no -fopenmp", "-fopenmp")):
    cmd = [c for c in k._compile_command(out, src, k._ARCH_FLAGS) if c != drop]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(label, "build failed", r.stderr[-500:]); continue
    p = subprocess.run([sys.executable, "-c", f"import torch; torch.ops.load_library({out!r})\ntry:\n    torch.ops.ufb_diag.throw_it(torch.zeros(2))\nexcept Exception as e: print('raised', type(e).__name__)"], capture_output=True, text=True)
    print(f"{label:22s} rc={p.returncode} {(p.stdout + p.stderr).strip()[-200:]}", flush=True)
print(" ".join(k._compile_command(out, src, k._ARCH_FLAGS)))
subprocess.run(["bash", "-c", f"ldd {out} | grep -E 'stdc|gcc_s|gomp|c10|torch'; python3 -c 'import torch,sys; print(torch.__version__, torch._C._GLIBCXX_USE_CXX11_ABI, sys.version)'; ls /opt/torch/.venv/lib/python3.12/site-packages/torch/lib | head -30"])
