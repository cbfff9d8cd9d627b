"""Finding the pairs of one split: the pieces each release's layout is made of, and the checks of the names.

Nothing is decoded here; :mod:`dsmnet_arch.preparation.inspection` decodes the files afterwards.
"""
import re
from pathlib import Path
from typing import NamedTuple, Optional

from dsmnet_arch.preparation.report import PreparationError, Problem
from dsmnet_arch.utils import IMAGE_EXTENSIONS


class Side(NamedTuple):
    """Where one side of a pair comes from: a whole file, or the left/right half of one (Rain800, DID-Data).

    ``png``: the whole file is decoded and written as PNG (a pair whose two files have different
    extensions gets one name, ``<key>.png``); halves are always written as PNG.
    """
    path: Path
    half: Optional[str] = None
    png: bool = False

    @property
    def decoded(self):
        """Whether the side is decoded and written as PNG rather than placed as the file it is."""
        return self.half is not None or self.png


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


def has_paired_folders(folder):
    """Whether ``folder`` holds ``input/`` and ``target/`` (our output, and the re-packed copies of MPRNet,
    Restormer and DRSformer)."""
    return (Path(folder) / 'input').is_dir() and (Path(folder) / 'target').is_dir()


def make_pair(key, input_path, target_path, problems, mixed_extensions=False):
    """The pair of two files named ``key`` + the input's extension, or None with an 'extension mismatch' problem.

    With ``mixed_extensions``, files of different extensions pair too: the pair is named ``key.png``
    and the side that is not a PNG is decoded and written as one (losslessly, no second JPEG).
    """
    if input_path.suffix.lower() == target_path.suffix.lower():
        return Pair(key + input_path.suffix, Side(input_path), Side(target_path))
    if not mixed_extensions:
        problems.append(Problem('extension mismatch', input_path, f'target is {target_path.name}'))
        return None
    return Pair(key + '.png', *(Side(p, png=p.suffix.lower() != '.png') for p in (input_path, target_path)))


def match_pairs(inputs, targets, problems, target_key=lambda key: key, mixed_extensions=False):
    """Pair ``{key: input}`` with ``{target_key(key): target}``; each pair is named by :func:`make_pair`."""
    pairs, used = [], set()
    for key, path in inputs.items():
        target = targets.get(target_key(key))
        if target is None:
            problems.append(Problem('input without target', path))
            continue
        used.add(target)
        pair = make_pair(key, path, target, problems, mixed_extensions)
        if pair is not None:
            pairs.append(pair)
    problems.extend(Problem('target without input', path) for path in targets.values() if path not in used)
    return pairs


def side_by_side(images, rainy, prefix=''):
    """Pairs of images that each hold one pair side by side; ``rainy`` ('left' or 'right') is the input's half.

    Each pair is named ``prefix`` + the file's stem + ``.png`` (halves are written as PNG).
    """
    clean = 'left' if rainy == 'right' else 'right'
    return [Pair(prefix + p.stem + '.png', Side(p, rainy), Side(p, clean)) for p in images]


def listed_pairs(list_file, problems):
    """Pairs from a list file of ``<rainy> <clean>`` lines (SPA-Data's ``real_world.txt``).

    Several rainy images may share one clean image. Paths are relative; a leading ``./`` or ``/``
    is dropped, and they are read against the list's folder or, where the first listed file is not
    found there, the folder above it. Each pair is named by :func:`make_pair` after the rainy
    file's stem. A line without two paths and a listed file that is missing are problems.
    """
    list_file = Path(list_file)
    lines = [(n, line.split()) for n, line in enumerate(list_file.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise PreparationError(f'{list_file} lists no pairs')
    base = _list_base(list_file, *lines[0])
    pairs = []
    for n, fields in lines:
        if len(fields) != 2:
            problems.append(Problem('bad list line', list_file,
                                    f'line {n}: expected "<rainy> <clean>", got {len(fields)} field(s)'))
            continue
        rainy, clean = (base / _relative(field) for field in fields)
        missing = [p for p in (rainy, clean) if not p.is_file()]
        problems.extend(Problem('listed file missing', p, f'{list_file.name} line {n}') for p in missing)
        pair = None if missing else make_pair(rainy.stem, rainy, clean, problems, mixed_extensions=True)
        if pair is not None:
            pairs.append(pair)
    return pairs


def _relative(field):
    """A list file's path as a relative path: without its leading ``./`` or ``/``."""
    return Path(re.sub(r'^(\./|/)+', '', field))


def _list_base(list_file, line_no, fields):
    """The folder that a list file's paths are relative to: its own or its parent, whichever holds the first one."""
    candidates = (list_file.parent, list_file.parent.parent)
    for base in candidates:
        if (base / _relative(fields[0])).is_file():
            return base
    raise PreparationError(f'{list_file} line {line_no}: {fields[0]} is neither in {candidates[0]} nor in '
                           f'{candidates[1]} (paths in the list are read relative to one of them)')


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
