"""Another version of the architecture timed against this checkout's, call by call in turn (docs/benchmarks.md).

    python scripts/benchmark_compare.py OTHER_ARCH_FILE [--rounds 10] [--train] [--side 512] [--batch 32]

The program is :mod:`dsmnet_arch.benchmarks.compare`; ``--help`` lists its options.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.benchmarks.compare import main  # noqa: E402

if __name__ == '__main__':
    main()
