"""Time the LoRA layer's CUDA kernels against cuBLAS: the same as `minilora bench` (minilora/bench.py).

    python3 benchmarks/bench_lora.py --quick
    python3 benchmarks/bench_lora.py --M 2048,8192 --NK 4096x4096 --r 16 --out results/
"""

import argparse
import sys

from minilora import bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=bench.__doc__.splitlines()[0])
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
