"""Builds the demo's paired rainy/clean data set offline, from photographs scikit-image ships.

    python scripts/make_demo_data.py [--dst demo_data] [--preset heavy] [--seed 0]
    python scripts/make_demo_data.py --dst bundled_data --photos bundled --preset light,heavy \
        --crop_size 128 --crops_per_photo 48        # the data of the bundled weights

Training pairs are random crops of some photographs, validation pairs are whole images of
*other* photographs, so validation measures deraining on scenes the network never saw. Rain is
added with :func:`dsmnet_arch.data.rain_synthesis.synthesize_rain`, seeded per file, so the
data are the same on every machine. The layout is BasicSR's paired one, with identical file
names on both sides::

    <dst>/train/input/astronaut_000.png   <dst>/train/target/astronaut_000.png
    <dst>/val/input/chelsea.png           <dst>/val/target/chelsea.png

``<dst>/demo_data.json`` records the configuration and whether the build finished; a second run
with the same configuration reuses the data, a different configuration rebuilds them.
"""
import argparse
import json
import os
import shutil
import sys
import zlib

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dsmnet_arch.data.rain_synthesis import PRESETS, synthesize_rain  # noqa: E402

# Photographs bundled in scikit-image's own data folder (read from disk, never downloaded).
TRAIN_PHOTOS = ('astronaut.png', 'coffee.png', 'motorcycle_left.png', 'camera.png', 'brick.png', 'grass.png',
                'gravel.png', 'hubble_deep_field.jpg')
VAL_PHOTOS = ('chelsea.png', 'rocket.jpg')
# The bundled weights' set: the demo's photographs and the other natural or scanned ones scikit-image
# ships (not the drawings: logo, chessboards, phantom, horse; not microaneurysms, smaller than a crop; not
# motorcycle_right, the other view of motorcycle_left); validation on the demo's two, never trained on.
PHOTO_SETS = {
    'demo': (TRAIN_PHOTOS, VAL_PHOTOS),
    'bundled': (TRAIN_PHOTOS + ('coins.png', 'moon.png', 'page.png', 'text.png', 'ihc.png', 'retina.jpg',
                                'cell.png', 'clock_motion.png', 'color.png'), VAL_PHOTOS),
}
MARKER = 'demo_data.json'


def skimage_data_folder():
    """The folder of images installed with scikit-image (not its download cache)."""
    import skimage.data
    return os.path.dirname(os.path.abspath(skimage.data.__file__))


def load_photo(name):
    """A bundled photograph as a 3-channel BGR uint8 array (grey photos are replicated)."""
    path = os.path.join(skimage_data_folder(), name)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f'make_demo_data: cannot read {path}; is scikit-image installed completely?')
    return img


def file_seed(seed, name):
    """Per-file seed: depends on the global seed and the file name only."""
    return np.random.SeedSequence([seed, zlib.crc32(name.encode())])


def build_plan(preset, seed, crop_size, crops_per_photo, photos='demo'):
    """List of (split, out_name, photo, crop corner or None, preset) and the configuration that defines them.

    ``preset`` is one preset or several joined by commas: training crops take them in turn, and every
    validation photograph is rendered once with each (named ``<photo>_<preset>.png`` then).
    """
    presets = preset.split(',')
    train_photos, val_photos = PHOTO_SETS[photos]
    rng = np.random.default_rng(seed)
    plan = []
    for photo in train_photos:
        height, width = load_photo(photo).shape[:2]
        if crop_size > min(height, width):
            raise SystemExit(f'make_demo_data: --crop_size {crop_size} is larger than {photo} ({height}x{width})')
        stem = os.path.splitext(photo)[0]
        for k in range(crops_per_photo):
            top = int(rng.integers(0, height - crop_size + 1))
            left = int(rng.integers(0, width - crop_size + 1))
            plan.append(('train', f'{stem}_{k:03d}.png', photo, (top, left), presets[k % len(presets)]))
    for photo in val_photos:
        stem = os.path.splitext(photo)[0]
        for name in presets:
            plan.append(('val', f'{stem}_{name}.png' if len(presets) > 1 else f'{stem}.png', photo, None, name))
    config = dict(
        seed=seed, preset=preset, preset_layers=repr([PRESETS[name] for name in presets]) if len(presets) > 1 else
        repr(PRESETS[preset]), crop_size=crop_size, crops_per_photo=crops_per_photo, train_photos=list(train_photos),
        val_photos=list(val_photos))
    return plan, config


def is_complete(dst, config, plan):
    """True when ``dst`` holds a finished build of this configuration with all its files."""
    try:
        with open(os.path.join(dst, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    if not marker.get('complete') or marker.get('config') != config:
        return False
    return all(
        os.path.isfile(os.path.join(dst, split, side, name)) for split, name, *_ in plan
        for side in ('input', 'target'))


def write_marker(dst, config, complete):
    with open(os.path.join(dst, MARKER), 'w') as f:
        json.dump(dict(complete=complete, config=config), f, indent=2)


def make_demo_data(dst, preset='heavy', seed=0, crop_size=96, crops_per_photo=24, photos='demo'):
    """Builds (or reuses) the demo data set under ``dst``; returns True when it was built now.

    Args:
        dst (str): Output folder; ``train/`` and ``val/`` are created inside.
        preset (str): Rain preset of :mod:`dsmnet_arch.data.rain_synthesis`, or several joined by commas
            (taken in turn). Default: 'heavy'.
        seed (int): Seed for crop positions and rain. Default: 0.
        crop_size (int): Side of the square training crops. Default: 96.
        crops_per_photo (int): Training crops taken from each training photograph. Default: 24.
        photos (str): The photographs, a key of ``PHOTO_SETS``: 'demo' or 'bundled'. Default: 'demo'.
    """
    for name in preset.split(','):
        if name not in PRESETS:
            raise SystemExit(f"make_demo_data: unknown --preset '{name}', choose one of {sorted(PRESETS)}")
    if photos not in PHOTO_SETS:
        raise SystemExit(f"make_demo_data: unknown --photos '{photos}', choose one of {sorted(PHOTO_SETS)}")
    plan, config = build_plan(preset, seed, crop_size, crops_per_photo, photos)
    if is_complete(dst, config, plan):
        print(f'make_demo_data: reusing {len(plan)} pairs in {dst} (same configuration, {MARKER})')
        return False
    os.makedirs(dst, exist_ok=True)
    has_marker = os.path.isfile(os.path.join(dst, MARKER))
    for split in ('train', 'val'):
        folder = os.path.join(dst, split)
        if os.path.exists(folder):
            if not has_marker:
                raise SystemExit(f'make_demo_data: {folder} exists but was not made by this script '
                                 f'(no {MARKER}); choose another --dst')
            shutil.rmtree(folder)  # an earlier, different or unfinished build of ours
        for side in ('input', 'target'):
            os.makedirs(os.path.join(folder, side))
    write_marker(dst, config, complete=False)

    photos = {}
    for split, name, photo, box, rain in tqdm(plan, desc='make_demo_data', unit='pair'):
        img = photos.setdefault(photo, load_photo(photo))
        if box is not None:
            top, left = box
            img = img[top:top + crop_size, left:left + crop_size]
        rainy, _ = synthesize_rain(img, rain, seed=file_seed(seed, name))
        for side, pixels in (('input', rainy), ('target', img)):
            path = os.path.join(dst, split, side, name)
            if not cv2.imwrite(path, pixels):
                raise SystemExit(f'make_demo_data: cannot write {path}')
    write_marker(dst, config, complete=True)
    count = {split: sum(p[0] == split for p in plan) for split in ('train', 'val')}
    print(f"make_demo_data: wrote {count['train']} training and {count['val']} validation pairs "
          f"('{preset}' rain, seed {seed}) to {dst}")
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dst', default='demo_data', help='output folder (default: demo_data)')
    parser.add_argument('--preset', default='heavy',
                        help=f'rain preset, one of {sorted(PRESETS)}, or several joined by commas (default: heavy)')
    parser.add_argument('--photos', default='demo', choices=sorted(PHOTO_SETS),
                        help="photographs: the demo's, or the bundled weights' larger set (default: demo)")
    parser.add_argument('--seed', type=int, default=0, help='seed for crops and rain (default: 0)')
    parser.add_argument('--crop_size', type=int, default=96, help='training crop side in pixels (default: 96)')
    parser.add_argument('--crops_per_photo', type=int, default=24, help='training crops per photo (default: 24)')
    args = parser.parse_args()
    if args.crop_size < 16 or args.crops_per_photo < 1:
        parser.error('--crop_size must be at least 16 and --crops_per_photo at least 1')
    make_demo_data(args.dst, args.preset, args.seed, args.crop_size, args.crops_per_photo, args.photos)


if __name__ == '__main__':
    main()
