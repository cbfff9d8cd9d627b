"""The preparation of one dataset: check every split first, then write each (or add its LMDBs) and record it."""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

from dsmnet_arch.preparation.discovery import discover_pairs
from dsmnet_arch.preparation.inspection import check_pairs
from dsmnet_arch.preparation.layouts import discover_paired_folders, layout_of
from dsmnet_arch.preparation.report import PreparationError, PreparationReport, SplitReport
from dsmnet_arch.preparation.writing import build_lmdbs, write_pairs
from dsmnet_arch.utils import atomic_write

MARKER = 'prepared.json'
#: What a finished split's record holds (besides the skipped files and the PNG level).
RECORD_FIELDS = frozenset({'dataset', 'source', 'pairs', 'lmdb'})


def prepare_dataset(dataset, sources, dst, lmdb=False, compress_level=1, skip_bad=False, workers=None,
                    progress=False):
    """Check, then write the paired layout (and LMDBs) of each split; see :mod:`dsmnet_arch.preparation`.

    Args:
        dataset (str): One of :data:`~dsmnet_arch.preparation.layouts.DATASETS`.
        sources (dict[str, str | Path]): split -> folder as downloaded, e.g. from
            :func:`~dsmnet_arch.preparation.layouts.resolve_sources`; a split named ``test/<set>`` is
            one of several test sets.
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
    run = _Preparation(dataset, dst, lmdb, compress_level, skip_bad, workers, progress)
    checked = [run.check(split, Path(source)) for split, source in sources.items()]
    todo = [split for split in checked if split is not None]
    run.stop_on_problems(todo)
    for split in todo:
        if split.record is None:
            run.write(split)
        else:
            run.add_lmdbs(split)
    return run.report


class _Split(NamedTuple):
    """A checked split: its report, output folder, sound pairs and their sizes, and a finished split's record."""
    report: SplitReport
    out: Path
    pairs: list
    infos: dict
    record: Optional[dict]


class _Preparation:
    """One call of :func:`prepare_dataset`: its settings, its report, and a method for each step."""

    def __init__(self, dataset, dst, lmdb, compress_level, skip_bad, workers, progress):
        self.layout = layout_of(dataset)
        if not 0 <= compress_level <= 9:
            raise PreparationError(f'PNG compress level must be 0-9, got {compress_level}')
        self.dataset, self.dst = dataset, Path(dst)
        self.lmdb, self.compress_level, self.skip_bad = lmdb, compress_level, skip_bad
        self.workers, self.progress = workers, progress
        self.report = PreparationReport(dataset, self.dst)

    def check(self, split, source):
        """Report on one split, then find and check its pairs; None for a finished split with nothing to add."""
        out = self.dst / split
        rep = self._split_report(split, source, out)
        record = _finished_split(out)
        if record is not None:
            self._report_finished(rep, record, out)
            if not self.lmdb or record['lmdb']:
                return None
            for sub in ('input.lmdb', 'target.lmdb'):
                if (out / sub).exists():
                    raise PreparationError(f'{out / sub} exists but {out / MARKER} does not record it '
                                           '(interrupted run?); remove it and run again', self.report)
        discover, folder = (self.layout.discover, source) if record is None else (discover_paired_folders, out)
        pairs, infos = self._sound_pairs(rep, discover, folder)
        if record is None:
            rep.pairs = len(pairs)
            if rep.paper_pairs is not None and rep.pairs != rep.paper_pairs:
                known = (self.layout.known_pairs or {}).get((split, rep.pairs))
                rep.warnings.append(f'{rep.pairs} pairs where the paper used {rep.paper_pairs}' + (
                    f': {known}' if known else '; total_iter in the training options assumes the paper\'s count'
                    if split == 'train' else ''))
        if infos:
            rep.sizes = (min((i.h, i.w) for i, _ in infos.values()), max((i.h, i.w) for i, _ in infos.values()))
        return _Split(rep, out, pairs, infos, record)

    def _split_report(self, split, source, out):
        """A new split's report, added to the run's, with a warning about folders left by interrupted runs."""
        rep = SplitReport(split, source, paper_pairs=(self.layout.paper_pairs or {}).get(split))
        self.report.splits.append(rep)
        leftovers = sorted(out.parent.glob(f'.{out.name}.incomplete-*')) if out.parent.is_dir() else []
        if leftovers:
            rep.warnings.append(f'{len(leftovers)} folder(s) left by an interrupted run, safe to delete: '
                                + ', '.join(str(p) for p in leftovers))
        return rep

    def _report_finished(self, rep, record, out):
        """Report a split that an earlier run finished; warn if it came from another dataset or source."""
        rep.status, rep.pairs, rep.lmdb = 'already prepared', record['pairs'], record['lmdb']
        if record['dataset'] != self.dataset or record['source'] != str(rep.source.resolve()):
            rep.warnings.append(f'{out} was prepared from {record["dataset"]} at {record["source"]}; '
                                'left as it is (remove it to prepare again)')

    def _sound_pairs(self, rep, discover, folder):
        """The pairs in ``folder`` without problems, and their sizes; the problems go to ``rep``."""
        pairs, problems, rep.ignored = discover_pairs(discover, folder, lmdb=self.lmdb)
        infos, check_problems = check_pairs(pairs, self.workers, self.progress, desc=f'{rep.split}: checking')
        rep.problems = problems + check_problems
        bad = {p.path for p in rep.problems}
        good = [p for p in pairs if p.name in infos and p.input.path not in bad and p.target.path not in bad]
        rep.skipped_pairs = len(pairs) - len(good)
        if not good and (self.skip_bad or not rep.problems):
            raise PreparationError(f'No usable {self.dataset} pairs in {rep.source}' + (
                ' once the pairs with problems are left out' if rep.problems else
                ' (see docs/datasets.md for the expected layout)'), self.report)
        return good, {p.name: infos[p.name] for p in good}

    def stop_on_problems(self, todo):
        """Stop before anything is written if a split has problems, unless they are to be skipped."""
        problems = [p for split in todo for p in split.report.problems]
        if problems and not self.skip_bad:
            raise PreparationError(f'{len(problems)} problem(s), nothing written; first: {problems[0]} '
                                   '(--skip-bad leaves such pairs out)', self.report)

    def write(self, split):
        """Write a checked split into a hidden folder beside its place, record it, and rename it into place."""
        rep = split.report
        split.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f'.{split.out.name}.incomplete-', dir=split.out.parent))
        try:
            write_pairs(split.pairs, tmp, self.compress_level, rep.placed, self.progress, desc=f'{rep.split}: writing')
            if self.lmdb:
                rep.map_size = build_lmdbs(tmp, tmp, split.infos, self.compress_level, self.progress)
            _write_record(tmp, {'dataset': self.dataset, 'source': str(rep.source.resolve()),
                                'pairs': len(split.pairs), 'lmdb': self.lmdb, 'compress_level': self.compress_level,
                                'skipped': [str(p) for p in rep.problems]})
            if split.out.exists():
                raise PreparationError(f'{split.out} appeared while preparing it (another run?); left it alone',
                                       self.report)
            os.rename(tmp, split.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        rep.status, rep.lmdb = 'written', self.lmdb

    def add_lmdbs(self, split):
        """Build the LMDBs of a finished split in a hidden folder inside it, move them in, and record them."""
        tmp = Path(tempfile.mkdtemp(prefix='.lmdb.incomplete-', dir=split.out))
        try:
            split.report.map_size = build_lmdbs(split.out, tmp, split.infos, self.compress_level, self.progress)
            for sub in ('input.lmdb', 'target.lmdb'):
                os.rename(tmp / sub, split.out / sub)
        finally:
            shutil.rmtree(tmp)
        split.record.update(lmdb=True, compress_level=self.compress_level)
        _write_record(split.out, split.record)
        split.report.status, split.report.lmdb = 'LMDB added', True


def _write_record(folder, record):
    """Write ``folder``'s completion record, ``prepared.json``, atomically."""
    atomic_write(folder / MARKER, lambda f: f.write((json.dumps(record, indent=2) + '\n').encode()))


def _finished_split(out):
    """The record of a finished split at ``out``, None if there is none; refuses foreign folders."""
    if not out.exists():
        return None
    marker = out / MARKER
    if not marker.is_file():
        raise PreparationError(f'{out} exists but holds no {MARKER} (not a finished preparation); '
                               'remove it or choose another --dst')
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError) as err:
        raise PreparationError(f'Cannot read {marker}: {err}') from None
    missing = RECORD_FIELDS - set(record) if isinstance(record, dict) else RECORD_FIELDS
    if missing:
        raise PreparationError(f'Cannot read {marker}: not a record of a preparation '
                               f'(no {", ".join(sorted(missing))}); remove the folder to prepare it again')
    return record
