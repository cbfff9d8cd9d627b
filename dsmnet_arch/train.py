"""Train with BasicSR's trainer: ``python dsmnet_arch/train.py -opt options/train_DSMNet_Rain100H.yml``.

Takes every flag of ``basicsr/train.py`` (``--launcher``, ``--auto_resume``, ``--debug``,
``--force_yml``). Options and data are checked first (``dsmnet_arch.checks``).
Outputs go to ``experiments/`` and ``tb_logger/`` under the current directory.
"""
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout, not the script's folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import dsmnet_arch  # noqa: E402,F401  (BasicSR fixes, registers DSMNet)
from dsmnet_arch.checks import run_pipeline  # noqa: E402

import basicsr.train  # noqa: E402


def main():
    run_pipeline(basicsr.train)


if __name__ == '__main__':
    main()
