"""Put trained weights into the package, where ``dsmnet-derain`` finds them without ``--weights``.

    python scripts/bundle_weights.py experiments/train_DSMNet_synthetic/models/net_g_latest.pth

Writes dsmnet_arch/weights/dsmnet_synthetic_rain.pth (:func:`dsmnet_arch.checkpoint.bundle_weights`): the
weights, their network's arguments and the text of the training options file (``--opt``).
"""
import argparse
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsmnet_arch.checkpoint import bundle_weights  # noqa: E402
from dsmnet_arch.loading import BUNDLED_WEIGHTS  # noqa: E402

if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='net_g_*.pth of the training run')
    parser.add_argument('--opt', default='options/bundled/train_DSMNet_synthetic.yml', help='its training options')
    parser.add_argument('--out', default=BUNDLED_WEIGHTS, help='default: the package\'s bundled weights')
    args = parser.parse_args()
    bundle_weights(args.checkpoint, args.out, args.opt)
    print(f'bundle_weights: wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)')
