"""Adds synthetic rain to every image of a folder: I = B + R.

    python scripts/synthesize_rain.py --input clean_dir --output rainy_dir [--preset light] [--seed 0]

Each rainy copy keeps its file name and format, so ``--output`` and ``--input`` form a BasicSR
paired data set as they are (``dataroot_lq: rainy_dir``, ``dataroot_gt: clean_dir``). The rain
of a file depends only on ``--seed``, ``--preset`` and the file's name, not on which other files
are in the folder. 8- and 16-bit images, grey or colour, are accepted; an alpha channel is kept.
"""
import argparse
import os
import sys
import zlib

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsmnet_arch.data.rain_synthesis import PRESETS, synthesize_rain  # noqa: E402
from dsmnet_arch.utils import IMAGE_EXTENSIONS  # noqa: E402


def rain_on_file(src, dst, preset, seed):
    """Reads ``src``, adds rain seeded by ``seed`` and the file name, writes ``dst``."""
    img = cv2.imread(src, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SystemExit(f'synthesize_rain: cannot read image {src}')
    if img.dtype not in (np.uint8, np.uint16):
        raise SystemExit(f'synthesize_rain: {src} has {img.dtype} pixels; only 8- and 16-bit images are supported')
    alpha = img[..., 3:] if img.ndim == 3 and img.shape[2] == 4 else None
    color = img[..., :3] if alpha is not None else img
    file_seed = np.random.SeedSequence([seed, zlib.crc32(os.path.basename(src).encode())])
    if img.dtype == np.uint8:
        rainy, _ = synthesize_rain(color, preset, seed=file_seed)
    else:
        rainy, _ = synthesize_rain(color.astype(np.float32) / 65535, preset, seed=file_seed)
        rainy = np.round(rainy * 65535).astype(np.uint16)
    if alpha is not None:
        rainy = np.concatenate([rainy, alpha], axis=2)
    if not cv2.imwrite(dst, rainy):
        raise SystemExit(f'synthesize_rain: cannot write {dst}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--input', required=True, help='folder of clean images')
    parser.add_argument('--output', required=True, help='folder for the rainy copies (created)')
    parser.add_argument('--preset', default='light', help=f'rain preset, one of {sorted(PRESETS)} (default: light)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the rain (default: 0)')
    args = parser.parse_args()

    if args.preset not in PRESETS:
        parser.error(f"--preset '{args.preset}' is unknown, choose one of {sorted(PRESETS)}")
    if not os.path.isdir(args.input):
        parser.error(f'--input {args.input} is not a folder')
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        parser.error('--output must differ from --input (the clean images would be overwritten)')
    names = sorted(n for n in os.listdir(args.input)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(args.input, n)))
    if not names:
        parser.error(f'--input {args.input} holds no images ({", ".join(IMAGE_EXTENSIONS)})')

    os.makedirs(args.output, exist_ok=True)
    for name in tqdm(names, desc='synthesize_rain', unit='image'):
        rain_on_file(os.path.join(args.input, name), os.path.join(args.output, name), args.preset, args.seed)
    print(f"synthesize_rain: wrote {len(names)} rainy images ('{args.preset}' rain, seed {args.seed}) "
          f'to {args.output}')


if __name__ == '__main__':
    main()
