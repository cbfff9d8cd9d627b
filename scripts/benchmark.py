"""Speed and memory of DSM-Net against the machine's own limit, as a markdown table and JSON (docs/benchmarks.md).

    python scripts/benchmark.py [--device cpu|cuda] [--precision fp32|bf16|fp16] [--compile] [--no-data]
                                [--tile N] [--json FILE] [--quick]

The program is :mod:`dsmnet_arch.benchmarks.cli`; ``--help`` lists its options.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.benchmarks.cli import main  # noqa: E402

if __name__ == '__main__':
    main()
