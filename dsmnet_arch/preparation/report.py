"""What a preparation found and did: problems with source files, the report per split, the fatal error."""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


class PreparationError(RuntimeError):
    """A fatal problem; ``str(err)`` is one line naming the file, ``err.report`` the full report."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


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

    def lines(self):
        """The report's lines for this split, indented under the dataset's line."""
        paper = f' (paper: {self.paper_pairs})' if self.paper_pairs is not None else ''
        lines = [f'  {self.split}: {self.status}, {self.pairs} pairs{paper}, from {self.source}']
        if self.sizes:
            (h0, w0), (h1, w1) = self.sizes
            lines.append(f'    image sizes (h x w): {h0}x{w0} to {h1}x{w1}')
        if self.placed:
            lines.append('    files: ' + ', '.join(f'{n} {how}' for how, n in sorted(self.placed.items())))
        if self.lmdb:
            lines.append(f'    LMDB: {self.split}/input.lmdb, {self.split}/target.lmdb'
                         + (f' (map size {self.map_size / 2**20:.1f} MiB)' if self.map_size else ''))
        lines += [f'    problem: {problem}' for problem in self.problems]
        if self.skipped_pairs:
            lines.append(f'    {self.skipped_pairs} pairs touched by the problems above '
                         + ('were left out' if self.status == 'written' else 'would be left out by --skip-bad'))
        if self.ignored:
            shown = ', '.join(str(p.name) for p in self.ignored[:5])
            more = f' and {len(self.ignored) - 5} more' if len(self.ignored) > 5 else ''
            lines.append(f'    warning: ignored {len(self.ignored)} files that fit no name of the layout: '
                         f'{shown}{more}')
        return lines + [f'    warning: {warning}' for warning in self.warnings]


@dataclass
class PreparationReport:
    """Everything :func:`~dsmnet_arch.preparation.prepare_dataset` found and did; ``str(report)`` is the report."""
    dataset: str
    dst: Path
    splits: list = field(default_factory=list)

    def __str__(self):
        return '\n'.join([f'{self.dataset} -> {self.dst}'] + [line for split in self.splits for line in split.lines()])
