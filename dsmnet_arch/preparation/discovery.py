"""Finding the pairs of one split: the pieces each release's layout is made of, and the checks of the names.

Nothing is decoded here; :mod:`dsmnet_arch.preparation.inspection` decodes the files afterwards.
"""
import re
from pathlib import Path
from typing import NamedTuple, Optional

from dsmnet_arch.preparation.report import PreparationError, Problem
from dsmnet_arch.utils import IMAGE_EXTENSIONS


class Side(NamedTuple):
    """Where one side of a pair comes from: a whole file, or the left/right half of one (Rain800)."""
    path: Path
    half: Optional[str] = None


class Pair(NamedTuple):
    """One training/test pair: ``name`` is its file name in both ``input/`` and ``target/``."""
    name: str
    input: Side
    target: Side


def subfolder(folder, sub, layout):
    """``folder/sub``, a folder the layout needs; PreparationError naming it if it is missing."""
    path = Path(folder) / sub
    if not path.is_dir():
        raise PreparationError(f'{layout} layout: folder {path} not found')
    return path


def images_in(folder, ignored):
    """Image files directly in ``folder`` (sorted); the other files there are added to ``ignored``."""
    images = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith('.') or path.is_dir():
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(path)
    return images


def keyed_images(folder, pattern, ignored, problems):
    """:func:`files_by_key` of the images directly in ``folder``."""
    return files_by_key(images_in(folder, ignored), pattern, ignored, problems)


def files_by_key(paths, pattern, ignored, problems):
    """``{key: path}`` for the files whose stem matches ``pattern`` (key: its group 1).

    Files that fit no name of the layout go to ``ignored``; a second file with the same key (say
    ``rain-001.png`` and ``rain-001.jpg``) is a name clash.
    """
    found = {}
    for path in paths:
        m = re.fullmatch(pattern, path.stem)
        if not m:
            ignored.append(path)
        elif m.group(1) in found:
            problems.append(Problem('name clash', path, f'same name as {found[m.group(1)].name}'))
        else:
            found[m.group(1)] = path
    return found


def match_pairs(inputs, targets, problems, target_key=lambda key: key):
    """Pair ``{key: input}`` with ``{target_key(key): target}``; the pair is named ``key`` + suffix."""
    pairs, used = [], set()
    for key, path in inputs.items():
        target = targets.get(target_key(key))
        if target is None:
            problems.append(Problem('input without target', path))
            continue
        used.add(target)
        if target.suffix.lower() != path.suffix.lower():
            problems.append(Problem('extension mismatch', path, f'target is {target.name}'))
        else:
            pairs.append(Pair(key + path.suffix, Side(path), Side(target)))
    problems.extend(Problem('target without input', path) for path in targets.values() if path not in used)
    return pairs


def discover_pairs(discover, folder, lmdb=False):
    """Find the pairs of one split with a layout's ``discover`` function, and check their output names.

    Args:
        discover (callable): The layout's ``discover(folder, problems, ignored)`` (:class:`Layout`'s).
        folder (str | Path): The split's folder as downloaded.
        lmdb (bool): Also report names that cannot be LMDB keys (ASCII without dots or spaces).

    Returns:
        tuple[list[Pair], list[Problem], list[Path]]: the pairs, the problems (unpaired files,
        clashing output names, bad keys), and the files that fit no name of the layout.
    """
    problems, ignored = [], []
    pairs = discover(folder, problems, ignored)
    return pairs, problems + _name_problems(pairs, lmdb), ignored


def _name_problems(pairs, lmdb):
    """Pairs whose output names share a stem (one LMDB key), and with ``lmdb`` stems that cannot be keys."""
    by_key = {}
    for pair in pairs:
        by_key.setdefault(Path(pair.name).stem, []).append(pair)
    problems = []
    for key, clashing in by_key.items():
        if len(clashing) > 1:
            problems.extend(Problem('name clash', p.input.path, f'{len(clashing)} pairs would be named {key}')
                            for p in clashing)
        elif lmdb and not (key.isascii() and re.fullmatch(r'[^\s.]+', key)):
            problems.append(Problem('bad LMDB key', clashing[0].input.path,
                                    f'{key!r}: BasicSR needs ASCII keys without dots or spaces'))
    return problems
