"""Speed and peak memory of the inference command, and how close tiled output is to whole-image output.

    python scripts/benchmark_infer.py                 # 1 MP and 12 MP, whole and tiled, fp32 on the CPU
    python scripts/benchmark_infer.py --sizes 1 --threads 2 --no-stress

The program is :mod:`dsmnet_arch.benchmarks.inference_command`; ``--help`` lists its options.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.benchmarks.inference_command import main  # noqa: E402

if __name__ == '__main__':
    main()
