"""Make one comparison sheet: each rainy photo in a row, beside it the result of each method.

    python scripts/compare_grid.py -o sheet.jpg --rainy datasets/RealRain \\
        --column DSM-Net=results/test_DSMNet_RealRain/visualization/RealRain --column Other=other_results/

One row per rainy photo (sorted by name; --names picks and orders some), every cell --width pixels
wide at the photo's aspect ratio, a label above each column. A method's result for photo ``x.jpg``
is the image of its folder named ``x`` with any extension (``dsmnet-derain`` keeps the names), else
``x_<suffix>`` as BasicSR's test.py saves them (the shortest such name that no longer photo name
claims). A photo without a result in every folder is an error naming it.
"""
import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.utils import IMAGE_EXTENSIONS  # noqa: E402

LABEL_HEIGHT = 32
GAP = 4
WHITE = 255


def images_by_stem(folder):
    """``{stem: path}`` of the images directly in ``folder``; ValueError for a missing folder or a stem used twice."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f'folder {folder} not found')
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in found:
                raise ValueError(f'{found[path.stem]} and {path} have the same name; keep one')
            found[path.stem] = path
    if not found:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    return found


def match_results(stems, folder, label):
    """``{stem: result path}`` for each rainy photo's stem: the same stem, else the shortest unclaimed ``stem_*``.

    Longer stems choose first, so photos ``1`` and ``1_2`` get ``1_x`` and ``1_2_x``, not the other's.
    """
    results = images_by_stem(folder)
    claimed, matched = set(), {}
    for stem in sorted(stems, key=len, reverse=True):
        candidates = [s for s in results if s not in claimed and (s == stem or s.startswith(stem + '_'))]
        if not candidates:
            raise ValueError(f'{label}: no result for {stem} in {folder}')
        best = stem if stem in candidates else min(candidates, key=len)
        claimed.add(best)
        matched[stem] = results[best]
    return matched


def read_image(path):
    """The image at ``path`` as 8-bit BGR; ValueError naming an unreadable file."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'cannot read {path}')
    return img


def fit(img, width, height):
    """``img`` resized to ``width`` x ``height``."""
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def label_strip(labels, width):
    """A white strip with each column's label above its cells."""
    strip = np.full((LABEL_HEIGHT, len(labels) * (width + GAP) - GAP, 3), WHITE, np.uint8)
    for k, label in enumerate(labels):
        cv2.putText(strip, label, (k * (width + GAP) + 6, LABEL_HEIGHT - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0),
                    1, cv2.LINE_AA)
    return strip


def make_sheet(rainy, columns, width=320, names=None):
    """The comparison sheet as an 8-bit BGR image.

    Args:
        rainy (str | Path): Folder of rainy photos (the first column).
        columns (list[tuple[str, str | Path]]): ``(label, folder)`` of each method's results.
        width (int): Width of every cell in pixels.
        names (list[str] | None): Stems of the photos to show, in this order; None: all, sorted.
    """
    photos = images_by_stem(rainy)
    stems = sorted(photos) if names is None else list(names)
    unknown = [stem for stem in stems if stem not in photos]
    if unknown:
        raise ValueError(f'no rainy photo named {unknown[0]} in {rainy}')
    results = [match_results(stems, folder, label) for label, folder in columns]
    rows = [label_strip(['rainy'] + [label for label, _ in columns], width)]
    for stem in stems:
        photo = read_image(photos[stem])
        height = max(1, round(width * photo.shape[0] / photo.shape[1]))
        cells = [fit(img, width, height) for img in [photo] + [read_image(found[stem]) for found in results]]
        gap = np.full((height, GAP, 3), WHITE, np.uint8)
        row = [piece for cell in cells for piece in (cell, gap)][:-1]
        rows += [np.full((GAP, rows[0].shape[1], 3), WHITE, np.uint8), np.concatenate(row, axis=1)]
    return np.concatenate(rows, axis=0)


def column_arg(value):
    label, sep, folder = value.partition('=')
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f'expected LABEL=FOLDER, got {value!r}')
    return label, folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('-o', '--output', required=True, help='the sheet to write (.jpg, .png, ...)')
    parser.add_argument('--rainy', required=True, help='folder of the rainy photos')
    parser.add_argument('--column', required=True, action='append', type=column_arg, metavar='LABEL=FOLDER',
                        help='a method\'s results (repeat for several, in the order of the columns)')
    parser.add_argument('--width', type=int, default=320, help='width of each cell in pixels (default 320)')
    parser.add_argument('--names', help='comma-separated stems of the photos to show, in this order (default: all)')
    args = parser.parse_args(argv)
    if args.width < 8:
        parser.error(f'--width must be at least 8, got {args.width}')
    try:
        sheet = make_sheet(args.rainy, args.column, args.width, args.names.split(',') if args.names else None)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(args.output, sheet):
            raise ValueError(f'cannot write {args.output} (unknown extension?)')
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{args.output}: {sheet.shape[1]}x{sheet.shape[0]}, {len(args.column) + 1} columns')
    return 0


if __name__ == '__main__':
    sys.exit(main())
