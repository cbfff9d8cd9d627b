"""Evaluate trained weights on held-out photographs with rain of two renderers, whole vs tiled, fp32 vs bf16.

    python scripts/evaluate_weights.py --large --precision --compare-to demo=W.pth

The program is :mod:`dsmnet_arch.benchmarks.weights_eval`; ``--help`` lists its options.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsmnet_arch.benchmarks.weights_eval import main  # noqa: E402

if __name__ == '__main__':
    main()
