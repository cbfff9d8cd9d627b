"""Turn the paper's deraining sets, as users download them, into BasicSR's paired layout.

BasicSR's stock ``PairedImageDataset`` wants ``input/`` and ``target/`` folders holding files of
the same name. None of the releases is arranged like that (``../../docs/datasets.md`` has the
details), so :func:`prepare_dataset` does, per split (``train``, ``test``):

1. discover the pairs in the release's native layout (:func:`discover_pairs`);
2. check them before anything is written (:func:`check_pairs`): unreadable, empty or truncated
   files, pairs whose sizes differ, inputs without targets and targets without inputs, clashing
   output names; counts against the paper's are a warning only;
3. write ``<dst>/<split>/{input,target}/`` into a hidden temporary folder next to it, then rename
   it into place, so an interrupted run never leaves a half-written split behind. Files that
   are used unchanged are hard links to the downloaded ones (a copy where that fails); a clean
   image shared by several rainy ones (Rain1400) is stored once and linked under each name;
4. optionally build ``<dst>/<split>/{input,target}.lmdb`` with BasicSR's ``make_lmdb_from_imgs``
   and a map size computed from the images' sizes;
5. record the finished split in ``<dst>/<split>/prepared.json``. A split that has this file is
   never rewritten: a second run reports it as already prepared (and only adds the LMDBs when
   they are asked for and missing); a split folder without it is refused.

Problems found in step 2 are fatal by default: nothing is written, and the report lists every
one. With ``skip_bad=True`` the pairs they touch are left out instead, and the report lists them.
"""
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional

import cv2
import numpy as np
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from tqdm import tqdm

from dsmnet_arch.utils import IMAGE_EXTENSIONS

DATASETS = ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400', 'Rain13K')
SPLITS = ('train', 'test')
PAPER_PAIRS = {
    'Rain100L': {'train': 200, 'test': 100},
    'Rain100H': {'train': 1800, 'test': 100},
    'Rain800': {'train': 700, 'test': 100},
    'Rain1400': {'train': 12600, 'test': 1400},
}
# Folder names of each split inside what users download (``--src``); Rain13K's test set is chosen.
RELEASE_FOLDERS = {
    'Rain100L': {'train': 'RainTrainL', 'test': 'Rain100L'},
    'Rain100H': {'train': 'RainTrainH', 'test': 'Rain100H'},
    'Rain800': {'train': 'training', 'test': 'test_syn'},
    'Rain1400': {'train': 'Rain12600', 'test': 'Rain1400'},
    'Rain13K': {'train': 'train/Rain13K', 'test': 'test/{test_set}'},
}
MARKER = 'prepared.json'
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class PreparationError(RuntimeError):
    """A fatal problem; ``str(err)`` is one line naming the file, ``err.report`` the full report."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class Side(NamedTuple):
    """Where one side of a pair comes from: a whole file, or the left/right half of one (Rain800)."""
    path: Path
    half: Optional[str] = None


class Pair(NamedTuple):
    """One training/test pair: ``name`` is its file name in both ``input/`` and ``target/``."""
    name: str
    input: Side
    target: Side


class ImageInfo(NamedTuple):
    """Decoded size of an image: height, width, channels and bytes per sample."""
    h: int
    w: int
    c: int
    itemsize: int


@dataclass
class Problem:
    """Something wrong with one source file; ``kind`` is one of the kinds in docs/datasets.md."""
    kind: str
    path: Path
    detail: str = ''

    def __str__(self):
        return f'{self.kind}: {self.path}' + (f' ({self.detail})' if self.detail else '')


@dataclass
class SplitReport:
    """What happened to one split; printed as part of :class:`PreparationReport`."""
    split: str
    source: Path
    status: str = 'not written'  # after the checks: 'written', 'already prepared' or 'LMDB added'
    pairs: int = 0
    paper_pairs: Optional[int] = None
    problems: list = field(default_factory=list)
    skipped_pairs: int = 0
    ignored: list = field(default_factory=list)
    placed: Counter = field(default_factory=Counter)
    sizes: tuple = ()
    lmdb: bool = False
    map_size: int = 0
    warnings: list = field(default_factory=list)


@dataclass
class PreparationReport:
    """Everything :func:`prepare_dataset` found and did; ``str(report)`` is the printed report."""
    dataset: str
    dst: Path
    splits: list = field(default_factory=list)

    def __str__(self):
        lines = [f'{self.dataset} -> {self.dst}']
        for s in self.splits:
            paper = f' (paper: {s.paper_pairs})' if s.paper_pairs is not None else ''
            lines.append(f'  {s.split}: {s.status}, {s.pairs} pairs{paper}, from {s.source}')
            if s.sizes:
                (h0, w0), (h1, w1) = s.sizes
                lines.append(f'    image sizes (h x w): {h0}x{w0} to {h1}x{w1}')
            if s.placed:
                lines.append('    files: ' + ', '.join(f'{n} {how}' for how, n in sorted(s.placed.items())))
            if s.lmdb:
                lines.append(f'    LMDB: {s.split}/input.lmdb, {s.split}/target.lmdb'
                             + (f' (map size {s.map_size / 2**20:.1f} MiB)' if s.map_size else ''))
            for problem in s.problems:
                lines.append(f'    problem: {problem}')
            if s.skipped_pairs:
                lines.append(f'    {s.skipped_pairs} pairs touched by the problems above '
                             + ('were left out' if s.status == 'written' else 'would be left out by --skip-bad'))
            if s.ignored:
                shown = ', '.join(str(p.name) for p in s.ignored[:5])
                more = f' and {len(s.ignored) - 5} more' if len(s.ignored) > 5 else ''
                lines.append(f'    warning: ignored {len(s.ignored)} files that fit no name of the layout: '
                             f'{shown}{more}')
            for warning in s.warnings:
                lines.append(f'    warning: {warning}')
        return '\n'.join(lines)


def resolve_sources(dataset, src=None, src_train=None, src_test=None, test_set=None):
    """Map each split to prepare to its source folder.

    Args:
        dataset (str): One of :data:`DATASETS`.
        src (str | Path | None): Folder holding the downloaded split folders under their release
            names (:data:`RELEASE_FOLDERS`); both splits are then required.
        src_train (str | Path | None): The training split's folder; overrides ``src``.
        src_test (str | Path | None): The test split's folder; overrides ``src``.
        test_set (str | None): Rain13K only, with ``src``: which ``test/<name>`` set is the test split.

    Returns:
        dict[str, Path]: split name -> existing folder.
    """
    if dataset not in DATASETS:
        raise PreparationError(f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    given = {'train': src_train, 'test': src_test}
    if src is None and src_train is None and src_test is None:
        raise PreparationError('Give --src (the folder holding the downloaded splits) or --src-train/--src-test')
    sources = {}
    for split in SPLITS:
        if given[split] is not None:
            folder = Path(given[split])
        elif src is not None:
            sub = RELEASE_FOLDERS[dataset][split]
            if '{test_set}' in sub:
                if test_set is None:
                    found = sorted(p.name for p in (Path(src) / 'test').glob('*') if p.is_dir())
                    raise PreparationError(f'{dataset}: choose the test set with --test-set (found in '
                                           f'{Path(src) / "test"}: {", ".join(found) or "nothing"}), '
                                           'or give --src-test')
                sub = sub.format(test_set=test_set)
            folder = Path(src) / sub
        else:
            continue
        if not folder.is_dir():
            raise PreparationError(f'{dataset} {split} split: folder {folder} not found'
                                   + ('' if given[split] else f' (expected {RELEASE_FOLDERS[dataset][split]} '
                                      'inside --src; use --src-train/--src-test for other names)'))
        sources[split] = folder
    return sources


def _images(folder):
    """Image files directly in ``folder`` (sorted) and the other files there (to report as ignored)."""
    images, others = [], []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith('.') or path.is_dir():
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else others).append(path)
    return images, others


def _keyed(paths, pattern, ignored, problems):
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


def _match(inputs, targets, problems, target_key=lambda key: key):
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


def _discover_rain100(folder, problems, ignored):
    # Test: rainy/rain-001.png with norain-001.png in the folder itself; train: rain-1.png and
    # norain-1.png side by side. Pairs are named by the number as written: 001.png, 1.png.
    folder = Path(folder)
    clean, others = _images(folder)
    ignored.extend(others)
    if (folder / 'rainy').is_dir():
        rainy, others = _images(folder / 'rainy')
        ignored.extend(others)
    else:
        rainy = [p for p in clean if p.stem.startswith('rain-')]
        clean = [p for p in clean if not p.stem.startswith('rain-')]
    return _match(_keyed(rainy, r'rain-(\d+)', ignored, problems),
                  _keyed(clean, r'norain-(\d+)', ignored, problems), problems)


def _discover_rain800(folder, problems, ignored):
    # ID-CGAN: one side-by-side jpg per pair, clean left, rainy right; halves are written as PNG.
    images, others = _images(folder)
    ignored.extend(others)
    return [Pair(p.stem + '.png', Side(p, 'right'), Side(p, 'left')) for p in images]


def _discover_rain1400(folder, problems, ignored):
    # DDN: rainy_image/N_M.jpg (M = 1..14) all share ground_truth/N.jpg; pairs keep the rainy name.
    found = []
    for sub, pattern in (('rainy_image', r'(\d+_\d+)'), ('ground_truth', r'(\d+)')):
        if not (Path(folder) / sub).is_dir():
            raise PreparationError(f'Rain1400 layout: folder {Path(folder) / sub} not found')
        images, others = _images(Path(folder) / sub)
        ignored.extend(others)
        found.append(_keyed(images, pattern, ignored, problems))
    return _match(*found, problems, target_key=lambda key: key.split('_')[0])


def _discover_paired_folders(folder, problems, ignored):
    # Rain13K style (and our own output): input/X and target/X with the same file names.
    found = []
    for sub in ('input', 'target'):
        if not (Path(folder) / sub).is_dir():
            raise PreparationError(f'paired layout: folder {Path(folder) / sub} not found')
        images, others = _images(Path(folder) / sub)
        ignored.extend(others)
        found.append(_keyed(images, r'(.+)', ignored, problems))
    return _match(*found, problems)


LAYOUTS = {
    'Rain100L': _discover_rain100,
    'Rain100H': _discover_rain100,
    'Rain800': _discover_rain800,
    'Rain1400': _discover_rain1400,
    'Rain13K': _discover_paired_folders,
}


def discover_pairs(dataset, folder, lmdb=False):
    """Find the pairs of one split in its native layout; nothing is decoded yet.

    Args:
        dataset (str): One of :data:`DATASETS` (selects the layout).
        folder (str | Path): The split's folder as downloaded.
        lmdb (bool): Also report names that cannot be LMDB keys (ASCII without dots or spaces).

    Returns:
        tuple[list[Pair], list[Problem], list[Path]]: the pairs, the problems (unpaired files,
        clashing output names, bad keys), and the files that fit no name of the layout.
    """
    problems, ignored = [], []
    pairs = LAYOUTS[dataset](folder, problems, ignored)
    by_key = {}
    for pair in pairs:
        by_key.setdefault(Path(pair.name).stem, []).append(pair)
    for key, clashing in by_key.items():
        if len(clashing) > 1:
            problems.extend(Problem('name clash', p.input.path, f'{len(clashing)} pairs would be named {key}')
                            for p in clashing)
        elif lmdb and not (key.isascii() and re.fullmatch(r'[^\s.]+', key)):
            problems.append(Problem('bad LMDB key', clashing[0].input.path,
                                    f'{key!r}: BasicSR needs ASCII keys without dots or spaces'))
    return pairs, problems, ignored


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


def _side_info(info, half):
    # Odd widths: the halves are w // 2 wide and the middle column is dropped (see _read_side).
    return info if half is None else info._replace(w=info.w // 2)


def check_pairs(pairs, workers=None, progress=False, desc='checking'):
    """Decode every file of ``pairs`` once and compare the two sides of each pair.

    Args:
        pairs (list[Pair]): From :func:`discover_pairs`.
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
        sides = [results[side.path][0] for side in (pair.input, pair.target)]
        if None in sides:
            continue
        inp, tgt = (_side_info(info, side.half) for info, side in zip(sides, (pair.input, pair.target)))
        if min(inp.w, tgt.w) == 0:
            problems.append(Problem('too small', pair.input.path, f'width {sides[0].w} cannot be split in two'))
        elif (inp.h, inp.w) != (tgt.h, tgt.w):
            problems.append(Problem('size mismatch', pair.input.path,
                                    f'input {inp.h}x{inp.w}, target {pair.target.path.name} {tgt.h}x{tgt.w}'))
        else:
            infos[pair.name] = (inp, tgt)
    return infos, problems


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


def _read_side(side):
    img = cv2.imread(str(side.path), cv2.IMREAD_UNCHANGED)
    if side.half is None:
        return img
    half = img.shape[1] // 2  # odd width 2k+1: left = columns [0, k), right = [k+1, 2k+1)
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


def _write_pairs(pairs, out, compress_level, placed, progress, desc):
    """Write ``out/input/<name>`` and ``out/target/<name>`` for every pair."""
    written = {}  # source file -> its first output, so shared targets become links
    for sub in ('input', 'target'):
        (out / sub).mkdir()
    for pair in tqdm(pairs, desc=desc, unit='pair', disable=not progress):
        for sub, side in (('input', pair.input), ('target', pair.target)):
            dst = out / sub / pair.name
            if side.half is not None:
                if not cv2.imwrite(str(dst), _read_side(side), [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
                    raise PreparationError(f'Cannot write {dst}')
                placed['PNG halves written'] += 1
            elif side.path in written:
                _link_duplicate(written[side.path], dst, placed)
            else:
                _place(side.path, dst, placed)
                written[side.path] = dst


def build_lmdbs(image_dir, lmdb_dir, infos, compress_level=1, progress=False):
    """Build ``lmdb_dir/{input,target}.lmdb`` from ``image_dir/{input,target}/`` with BasicSR.

    Args:
        image_dir (Path): A folder holding ``input/`` and ``target/``.
        lmdb_dir (Path): Where the two LMDB folders go (they must not exist yet).
        infos (dict[str, tuple[ImageInfo, ImageInfo]]): Pair name -> sizes, from :func:`check_pairs`.
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


def _write_marker(folder, record):
    tmp = folder / (MARKER + '.tmp')
    tmp.write_text(json.dumps(record, indent=2) + '\n')
    os.replace(tmp, folder / MARKER)


def _finished_split(out):
    """The record of a finished split at ``out``, None if there is none; refuses foreign folders."""
    if not out.exists():
        return None
    marker = out / MARKER
    if not marker.is_file():
        raise PreparationError(f'{out} exists but holds no {MARKER} (not a finished preparation); '
                               'remove it or choose another --dst')
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise PreparationError(f'Cannot read {marker}: {err}') from None


def prepare_dataset(dataset, sources, dst, lmdb=False, compress_level=1, skip_bad=False, workers=None,
                    progress=False):
    """Check, then write the paired layout (and LMDBs) of each split; see the module docstring.

    Args:
        dataset (str): One of :data:`DATASETS`.
        sources (dict[str, str | Path]): split -> folder as downloaded, e.g. from :func:`resolve_sources`.
        dst (str | Path): Output folder; gets ``<split>/input``, ``<split>/target`` (and ``.lmdb``).
        lmdb (bool): Also build ``<split>/input.lmdb`` and ``<split>/target.lmdb``.
        compress_level (int): PNG compression level (0-9) of the PNGs written (Rain800 halves, LMDB).
        skip_bad (bool): Leave out the pairs with problems instead of stopping before writing.
        workers (int | None): Threads decoding images for the checks; None: CPUs, at most 8.
        progress (bool): Show tqdm progress bars.

    Returns:
        PreparationReport: What was found and done per split.

    Raises:
        PreparationError: On fatal problems, before anything is written; ``err.report`` has them all.
    """
    if dataset not in DATASETS:
        raise PreparationError(f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    if not 0 <= compress_level <= 9:
        raise PreparationError(f'PNG compress level must be 0-9, got {compress_level}')
    dst = Path(dst)
    report = PreparationReport(dataset, dst)
    todo = []  # (split report, output folder, pairs, infos, existing record or None)
    for split, source in sources.items():
        out = dst / split
        rep = SplitReport(split, Path(source), paper_pairs=PAPER_PAIRS.get(dataset, {}).get(split))
        report.splits.append(rep)
        leftovers = sorted(dst.glob(f'.{split}.incomplete-*')) if dst.is_dir() else []
        if leftovers:
            rep.warnings.append(f'{len(leftovers)} folder(s) left by an interrupted run, safe to delete: '
                                + ', '.join(str(p) for p in leftovers))
        record = _finished_split(out)
        if record is not None:
            rep.status, rep.pairs, rep.lmdb = 'already prepared', record['pairs'], record['lmdb']
            if record['dataset'] != dataset or record['source'] != str(Path(source).resolve()):
                rep.warnings.append(f'{out} was prepared from {record["dataset"]} at {record["source"]}; '
                                    'left as it is (remove it to prepare again)')
            if not lmdb or record['lmdb']:
                continue
            for sub in ('input.lmdb', 'target.lmdb'):
                if (out / sub).exists():
                    raise PreparationError(f'{out / sub} exists but {out / MARKER} does not record it '
                                           '(interrupted run?); remove it and run again', report)
            pairs, problems, rep.ignored = discover_pairs('Rain13K', out, lmdb=True)
        else:
            pairs, problems, rep.ignored = discover_pairs(dataset, source, lmdb=lmdb)
        infos, check_problems = check_pairs(pairs, workers, progress, desc=f'{split}: checking')
        rep.problems = problems + check_problems
        bad = {p.path for p in rep.problems}
        good = [p for p in pairs if p.name in infos and p.input.path not in bad and p.target.path not in bad]
        rep.skipped_pairs = len(pairs) - len(good)
        infos = {p.name: infos[p.name] for p in good}
        if not good and (skip_bad or not rep.problems):
            raise PreparationError(f'No usable {dataset} pairs in {source}' + (
                ' once the pairs with problems are left out' if rep.problems else
                ' (see docs/datasets.md for the expected layout)'), report)
        if rep.status == 'not written':
            rep.pairs = len(good)
            if rep.paper_pairs is not None and rep.pairs != rep.paper_pairs:
                rep.warnings.append(f'{rep.pairs} pairs where the paper used {rep.paper_pairs}'
                                    + ('; total_iter in the training options assumes the paper\'s count'
                                       if split == 'train' else ''))
        if infos:
            rep.sizes = (min((i.h, i.w) for i, _ in infos.values()), max((i.h, i.w) for i, _ in infos.values()))
        todo.append((rep, out, good, infos, record))

    problems = [p for rep, *_ in todo for p in rep.problems]
    if problems and not skip_bad:
        raise PreparationError(f'{len(problems)} problem(s), nothing written; first: {problems[0]} '
                               '(--skip-bad leaves such pairs out)', report)

    dst.mkdir(parents=True, exist_ok=True)
    for rep, out, pairs, infos, record in todo:
        if record is not None:  # a finished split that only lacks its LMDBs
            tmp = Path(tempfile.mkdtemp(prefix='.lmdb.incomplete-', dir=out))
            try:
                rep.map_size = build_lmdbs(out, tmp, infos, compress_level, progress)
                for sub in ('input.lmdb', 'target.lmdb'):
                    os.rename(tmp / sub, out / sub)
            finally:
                shutil.rmtree(tmp)
            record.update(lmdb=True, compress_level=compress_level)
            _write_marker(out, record)
            rep.status, rep.lmdb = 'LMDB added', True
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f'.{rep.split}.incomplete-', dir=dst))
        try:
            _write_pairs(pairs, tmp, compress_level, rep.placed, progress, desc=f'{rep.split}: writing')
            if lmdb:
                rep.map_size = build_lmdbs(tmp, tmp, infos, compress_level, progress)
            _write_marker(tmp, {'dataset': dataset, 'source': str(Path(rep.source).resolve()), 'pairs': len(pairs),
                                'lmdb': lmdb, 'compress_level': compress_level,
                                'skipped': [str(p) for p in rep.problems]})
            if out.exists():
                raise PreparationError(f'{out} appeared while preparing it (another run?); left it alone', report)
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        rep.status, rep.lmdb = 'written', lmdb
    return report
