"""The checks of the pairs before anything is written: every file decoded once, the two sides compared."""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from dsmnet_arch.preparation.report import Problem

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class ImageInfo(NamedTuple):
    """Decoded size of an image: height, width, channels and bytes per sample."""
    h: int
    w: int
    c: int
    itemsize: int


def inspect_image(path):
    """Decode one file to check it; returns ``(ImageInfo, None)`` or ``(None, reason)``.

    Truncated JPEG and PNG files are caught by their missing end marker, since OpenCV decodes
    them partially with no error.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, f'cannot be read: {err.strerror}'
    if not data:
        return None, 'empty file'
    if data[:2] == b'\xff\xd8' and b'\xff\xd9' not in data[-64:]:
        return None, 'truncated JPEG (no end-of-image marker)'
    if data[:8] == _PNG_SIGNATURE and b'IEND' not in data[-64:]:
        return None, 'truncated PNG (no IEND chunk)'
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return None, 'not a decodable image'
    return ImageInfo(img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2], img.dtype.itemsize), None


def check_pairs(pairs, workers=None, progress=False, desc='checking'):
    """Decode every file of ``pairs`` once and compare the two sides of each pair.

    Args:
        pairs (list[Pair]): From :func:`~dsmnet_arch.preparation.discovery.discover_pairs`.
        workers (int | None): Decoding threads; None: the number of CPUs, at most 8.
        progress (bool): Show a tqdm progress bar.
        desc (str): The progress bar's label.

    Returns:
        tuple[dict[str, tuple[ImageInfo, ImageInfo]], list[Problem]]: input and target sizes by
        pair name (for the pairs without problems), and the problems found.
    """
    paths = sorted({side.path for pair in pairs for side in (pair.input, pair.target)})
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = dict(zip(paths, tqdm(pool.map(inspect_image, paths), total=len(paths), desc=desc,
                                       unit='file', disable=not progress)))
    problems = [Problem('unreadable', path, reason) for path, (_, reason) in results.items() if reason]
    infos = {}
    for pair in pairs:
        whole = [results[side.path][0] for side in (pair.input, pair.target)]
        if None in whole:
            continue
        sizes = tuple(_side_info(info, side.half) for info, side in zip(whole, (pair.input, pair.target)))
        problem = _size_problem(pair, whole[0].w, *sizes)
        if problem:
            problems.append(problem)
        else:
            infos[pair.name] = sizes
    return infos, problems


def _size_problem(pair, input_width, inp, tgt):
    """What is wrong with the sizes ``inp`` and ``tgt`` of a pair's two sides; None if they agree."""
    if min(inp.w, tgt.w) == 0:
        return Problem('too small', pair.input.path, f'width {input_width} cannot be split in two')
    if (inp.h, inp.w) != (tgt.h, tgt.w):
        return Problem('size mismatch', pair.input.path,
                       f'input {inp.h}x{inp.w}, target {pair.target.path.name} {tgt.h}x{tgt.w}')
    return None


def _side_info(info, half):
    """The size of a side: the whole image, or one half (odd widths: w // 2, the middle column dropped)."""
    return info if half is None else info._replace(w=info.w // 2)
