"""Several seeds at the paper's learning rate: loss curves, divergences and held-out PSNR-Y (docs/benchmarks.md).

    python scripts/stability_benchmark.py --seeds 0 1 2 --iters 1000 --label clip --out stability
    python scripts/stability_benchmark.py --plot stability --png stability.png

The program is :mod:`dsmnet_arch.benchmarks.stability`; ``--help`` lists its options.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.benchmarks.stability import main  # noqa: E402

if __name__ == '__main__':
    main()
