"""A/B of two versions of the 8-bit CPU FFF kernel in one process: the C++ source of each given copy of
fff_cpu_kernel.py is built under its own op namespace (ufbA, ufbB), both must give identical outputs on the layer, then
they are timed in alternation (medians, µs per layer, 1x11 FFF at hidden 768, 128 tokens). On a noisy machine this is
the fair way to compare two kernels: load hits both alike.

    python3 benchmarks/ab_af8_kernel.py A.py B.py [--layers 1] [--threads 1] [--rounds 300]

To try a recorded variant: copy modeling_ultrafastbert/fff_cpu_kernel.py, apply its patch to the copy
(e.g. benchmarks/edgebert_runs/session9_dfs_walk.patch, `patch -p1` in a scratch tree), and pass both files.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fff_layer import machine  # noqa: E402
from bench_fff_layer_8bit import adaptivfloat8_layer  # noqa: E402

from modeling_ultrafastbert import fff_cpu_kernel  # noqa: E402

MARK = '_CPP_SOURCE = r"""'


def build(copy: str, namespace: str, directory: str):
    """Builds the C++ source held by ``copy`` (a version of fff_cpu_kernel.py) with its ops under ``namespace``."""
    text = Path(copy).read_text()
    start = text.index(MARK) + len(MARK)
    source = text[start:text.index('"""', start)]
    source = source.replace("TORCH_LIBRARY_FRAGMENT(ultrafastbert", f"TORCH_LIBRARY_FRAGMENT({namespace}")
    source = source.replace("TORCH_LIBRARY_IMPL(ultrafastbert", f"TORCH_LIBRARY_IMPL({namespace}")
    source = source.replace('"ultrafastbert::', f'"{namespace}::')
    cpp, library = os.path.join(directory, f"{namespace}.cpp"), os.path.join(directory, f"{namespace}.so")
    Path(cpp).write_text(source)
    errors = []
    for compiler in fff_cpu_kernel._compilers():
        result = subprocess.run(fff_cpu_kernel._compile_command(library, cpp, fff_cpu_kernel._ARCH_FLAGS, compiler),
                                capture_output=True, text=True)
        if result.returncode == 0:
            torch.ops.load_library(library)
            return getattr(torch.ops, namespace).fff_forward_cpu_af8.default
        errors.append(f"{compiler}: {result.stderr.strip()[-500:]}")
    sys.exit(f"could not build {copy}:\n" + "\n".join(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--layers", type=int, default=1, help="distinct layers per timed call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as directory:
        op_a, op_b = build(args.a, "ufbA", directory), build(args.b, "ufbB", directory)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = []
    for _ in range(args.layers):
        layer, in_codes, in_exp, out_codes, out_exp = adaptivfloat8_layer()
        layers.append((in_codes, in_exp, layer.in_bias, out_codes, out_exp))
    x = torch.randn(args.tokens, 768)
    times = {"A": [], "B": []}
    with torch.inference_mode():
        for layer in layers:
            if not torch.equal(op_a(x, *layer), op_b(x, *layer)):
                sys.exit("A and B give different outputs")
        for _ in range(args.rounds):
            for name, op in (("A", op_a), ("B", op_b)):
                start = time.perf_counter()
                for _ in range(3):
                    for layer in layers:
                        op(x, *layer)
                times[name].append((time.perf_counter() - start) / (3 * args.layers) * 1e6)
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"check: identical outputs ({args.tokens} tokens, {args.layers} layer(s), {args.threads} thread(s))")
    print(f"A {a:.1f} µs | B {b:.1f} µs per layer | B faster by {a / b:.3f}x")


if __name__ == "__main__":
    main()
