"""Memory of the fused op's forward + backward with W in NF4: the NumPy reference (which dequantizes
all of W for the call) against the C++ op (which dequantizes W's panels as it packs them).

    python benchmarks/nf4_memory.py            # W 4096 × 4096, one row of x, r = 16
    python benchmarks/nf4_memory.py --N 1024 --K 1024 --M 64

Prints the peak of NumPy's allocations during the calls (tracemalloc sees every NumPy array). The
C++ op's own work buffers are not NumPy arrays and are not in that figure: at most one packed column
block of W (kL3Budget, 8 MiB, csrc/cpu/gemm_blocked.h) plus a packed block of x, reused between
calls.
"""

import argparse
import sys
import tracemalloc

import numpy as np

from minilora import kernels
from minilora.kernels import cpp
from minilora.quant import nf4_quantize


def peak_mib(backend, x, W, A, B, dy):
    kernels.lora_forward(x, W, A, B, 2.0, backend=backend)  # warm: work buffers already allocated
    tracemalloc.start()
    _, u = kernels.lora_forward(x, W, A, B, 2.0, backend=backend)
    kernels.lora_backward(dy, x, W, A, B, u, 2.0, backend=backend)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--M", type=int, default=1)
    parser.add_argument("--K", type=int, default=4096)
    parser.add_argument("--N", type=int, default=4096)
    parser.add_argument("--r", type=int, default=16)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    W = nf4_quantize(rng.standard_normal((args.N, args.K)).astype(np.float32), 64, double_quant=True)
    x, A, B, dy = (rng.standard_normal(shape).astype(np.float32) for shape in
                   ((args.M, args.K), (args.r, args.K), (args.N, args.r), (args.M, args.N)))
    print(f"W {args.N} × {args.K}: {W.nbytes / 2**20:.2f} MiB in NF4 ({W.bits_per_parameter:.3f} bits a "
          f"weight), {4 * W.size / 2**20:.2f} MiB in float32; x {args.M} × {args.K}, r = {args.r}")
    for backend in ("numpy",) + (("cpp",) if cpp.status()[0] else ()):
        print(f"{backend:>5}: peak of NumPy allocations during forward + backward "
              f"{peak_mib(backend, x, W, A, B, dy):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
