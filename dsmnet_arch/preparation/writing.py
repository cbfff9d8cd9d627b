"""Writing a checked split: its files (hard links where possible, PNG halves for Rain800) and its LMDBs."""
import contextlib
import os
import shutil
from pathlib import Path

import cv2
from tqdm import tqdm

from dsmnet_arch.preparation.report import PreparationError

from basicsr.utils.lmdb_util import make_lmdb_from_imgs


def write_pairs(pairs, out, compress_level, placed, progress, desc):
    """Write ``out/input/<name>`` and ``out/target/<name>`` for every pair.

    A file used unchanged is hard-linked (copied where that fails); a half of an image (Rain800,
    DID-Data) or a file to convert (:attr:`Side.png`) is decoded and written as PNG at
    ``compress_level``; a side already written under another name (Rain1400's and SPA-Data's shared
    clean images) gets another name for that output. ``placed`` counts each way.
    """
    written = {}  # side -> its first output, so shared sides become links
    for sub in ('input', 'target'):
        (out / sub).mkdir()
    for pair in tqdm(pairs, desc=desc, unit='pair', disable=not progress):
        for sub, side in (('input', pair.input), ('target', pair.target)):
            dst = out / sub / pair.name
            if side in written:
                _link_duplicate(written[side], dst, placed)
            elif side.decoded:
                if not cv2.imwrite(str(dst), _decode(side), [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
                    raise PreparationError(f'Cannot write {dst}')
                placed['PNG halves written' if side.half else 'PNGs converted'] += 1
            else:
                _place(side.path, dst, placed)
            written.setdefault(side, dst)


def _decode(side):
    """The side's image: the whole file, or its left or right half (odd width 2k+1: left = columns [0, k),
    right = [k+1, 2k+1))."""
    img = cv2.imread(str(side.path), cv2.IMREAD_UNCHANGED)
    if side.half is None:
        return img
    half = img.shape[1] // 2
    return img[:, :half] if side.half == 'left' else img[:, img.shape[1] - half:]


def _place(src, dst, placed):
    """Hard-link ``src`` to ``dst``; copy where hard links fail (other file system, no permission)."""
    try:
        os.link(src, dst)
        placed['hard links'] += 1
    except OSError:
        shutil.copyfile(src, dst)
        placed['copies'] += 1


def _link_duplicate(first, dst, placed):
    """Another name for an already written file: hard link, else relative symlink, else copy."""
    try:
        os.link(first, dst)
        placed['hard links'] += 1
    except OSError:
        try:
            os.symlink(os.path.relpath(first, dst.parent), dst)
            placed['symlinks'] += 1
        except OSError:
            shutil.copyfile(first, dst)
            placed['copies'] += 1


def lmdb_map_size(infos):
    """An LMDB map size that holds these images as PNG, whatever their content.

    BasicSR's ``make_lmdb_from_imgs`` guesses ten times the first image's PNG size times the
    count, which overflows (``MDB_MAP_FULL``) when later images are larger or less compressible
    than the first. This bound needs no guess: a PNG is at most its raw scanlines (one filter byte
    per row) plus zlib's and the chunks' overhead (under 0.4 %), and LMDB stores each value in
    whole 4 KiB pages plus tree pages. The map is virtual address space; the file grows as
    written.
    """
    page = 4096
    total = 0
    for info in infos:
        raw = info.h * (info.w * info.c * info.itemsize + 1)
        total += (raw + raw // 256 + 1024) // page * page + 2 * page
    return total + 64 * 2**20


def build_lmdbs(image_dir, lmdb_dir, infos, compress_level=1, progress=False):
    """Build ``lmdb_dir/{input,target}.lmdb`` from ``image_dir/{input,target}/`` with BasicSR.

    Args:
        image_dir (Path): A folder holding ``input/`` and ``target/``.
        lmdb_dir (Path): Where the two LMDB folders go (they must not exist yet).
        infos (dict[str, tuple[ImageInfo, ImageInfo]]): Pair name -> sizes, from
            :func:`~dsmnet_arch.preparation.inspection.check_pairs`.
        compress_level (int): PNG compression level (0-9) of the images stored in the LMDBs.
        progress (bool): Let BasicSR print its messages and progress bar.

    Returns:
        int: The larger of the two map sizes used.
    """
    names = sorted(infos)
    keys = [Path(name).stem for name in names]
    sizes = []
    with contextlib.ExitStack() as stack:
        if not progress:  # BasicSR prints its own messages and progress bar
            devnull = stack.enter_context(open(os.devnull, 'w'))
            stack.enter_context(contextlib.redirect_stdout(devnull))
            stack.enter_context(contextlib.redirect_stderr(devnull))
        for side, sub in enumerate(('input', 'target')):
            map_size = lmdb_map_size(infos[name][side] for name in names)
            make_lmdb_from_imgs(str(image_dir / sub), str(lmdb_dir / f'{sub}.lmdb'), names, keys,
                                compress_level=compress_level, map_size=map_size)
            sizes.append(map_size)
    return max(sizes)
