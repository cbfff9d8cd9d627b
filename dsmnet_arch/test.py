"""Test with BasicSR's pipeline: ``python dsmnet_arch/test.py -opt options/test_DSMNet_Rain100H.yml``.

Takes every flag of ``basicsr/test.py``. Results go to ``results/`` under the current directory.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout, not the script's folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dsmnet_arch  # noqa: E402,F401  (BasicSR fixes, registers DSMNet)
from dsmnet_arch.checks import run_pipeline  # noqa: E402

import basicsr.test  # noqa: E402


def main():
    run_pipeline(basicsr.test)


if __name__ == '__main__':
    main()
