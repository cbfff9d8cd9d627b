"""The releases as users download them: each one's split folders, pair names and paper pair counts.

Adding a release is local to this file: write its ``discover(folder, problems, ignored)``
function from the pieces of :mod:`dsmnet_arch.preparation.discovery` and give it an entry in
:data:`LAYOUTS`; ``--dataset`` of ``scripts/prepare_rain_datasets.py`` then offers it
(docs/datasets.md describes each layout for users).
"""
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from dsmnet_arch.preparation.discovery import (Pair, Side, files_by_key, images_in, keyed_images, match_pairs,
                                                subfolder)
from dsmnet_arch.preparation.report import PreparationError

SPLITS = ('train', 'test')


class Layout(NamedTuple):
    """How one release is arranged.

    Attributes:
        folders (dict[str, str]): Split -> the split's folder inside ``--src``; ``{test_set}`` is
            filled in from ``--test-set``.
        discover (callable): ``discover(folder, problems, ignored) -> list[Pair]`` for one split's
            folder; it appends what cannot pair to ``problems`` (a list of
            :class:`~dsmnet_arch.preparation.report.Problem`) and the files that fit no name of the
            layout to ``ignored``.
        paper_pairs (dict[str, int] | None): Split -> the pair count DSM-Net's paper used; a
            different count is reported as a warning.
    """
    folders: dict
    discover: Callable
    paper_pairs: Optional[dict] = None


def discover_rain100(folder, problems, ignored):
    """Rain100L/H (JORDER, PReNet): test ``rainy/rain-001.png`` with ``norain-001.png`` in the folder
    itself; train ``rain-1.png`` and ``norain-1.png`` side by side. Pairs are named by the number as
    written: ``001.png``, ``1.png``."""
    folder = Path(folder)
    clean = images_in(folder, ignored)
    if (folder / 'rainy').is_dir():
        rainy = images_in(folder / 'rainy', ignored)
    else:
        rainy = [p for p in clean if p.stem.startswith('rain-')]
        clean = [p for p in clean if not p.stem.startswith('rain-')]
    return match_pairs(files_by_key(rainy, r'rain-(\d+)', ignored, problems),
                       files_by_key(clean, r'norain-(\d+)', ignored, problems), problems)


def discover_rain800(folder, problems, ignored):
    """Rain800 (ID-CGAN): one side-by-side image per pair, clean left, rainy right; halves are written as PNG."""
    return [Pair(p.stem + '.png', Side(p, 'right'), Side(p, 'left')) for p in images_in(folder, ignored)]


def discover_rain1400(folder, problems, ignored):
    """Rain1400 (DDN): ``rainy_image/N_M.jpg`` (M = 1..14) all share ``ground_truth/N.jpg``; pairs keep
    the rainy name."""
    rainy = keyed_images(subfolder(folder, 'rainy_image', 'Rain1400'), r'(\d+_\d+)', ignored, problems)
    clean = keyed_images(subfolder(folder, 'ground_truth', 'Rain1400'), r'(\d+)', ignored, problems)
    return match_pairs(rainy, clean, problems, target_key=lambda key: key.split('_')[0])


def discover_paired_folders(folder, problems, ignored):
    """Rain13K style (and our own output): ``input/X`` and ``target/X`` with the same file names."""
    inputs = keyed_images(subfolder(folder, 'input', 'paired'), r'(.+)', ignored, problems)
    targets = keyed_images(subfolder(folder, 'target', 'paired'), r'(.+)', ignored, problems)
    return match_pairs(inputs, targets, problems)


LAYOUTS = {
    'Rain100L': Layout({'train': 'RainTrainL', 'test': 'Rain100L'}, discover_rain100, {'train': 200, 'test': 100}),
    'Rain100H': Layout({'train': 'RainTrainH', 'test': 'Rain100H'}, discover_rain100, {'train': 1800, 'test': 100}),
    'Rain800': Layout({'train': 'training', 'test': 'test_syn'}, discover_rain800, {'train': 700, 'test': 100}),
    'Rain1400': Layout({'train': 'Rain12600', 'test': 'Rain1400'}, discover_rain1400, {'train': 12600, 'test': 1400}),
    'Rain13K': Layout({'train': 'train/Rain13K', 'test': 'test/{test_set}'}, discover_paired_folders),
}
DATASETS = tuple(LAYOUTS)


def layout_of(dataset):
    """The :class:`Layout` of ``dataset``; PreparationError naming the choices for an unknown one."""
    if dataset not in LAYOUTS:
        raise PreparationError(f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    return LAYOUTS[dataset]


def resolve_sources(dataset, src=None, src_train=None, src_test=None, test_set=None):
    """Map each split to prepare to its source folder.

    Args:
        dataset (str): One of :data:`DATASETS`.
        src (str | Path | None): Folder holding the downloaded split folders under their release
            names (:attr:`Layout.folders`); both splits are then required.
        src_train (str | Path | None): The training split's folder; overrides ``src``.
        src_test (str | Path | None): The test split's folder; overrides ``src``.
        test_set (str | None): Rain13K only, with ``src``: which ``test/<name>`` set is the test split.

    Returns:
        dict[str, Path]: split name -> existing folder.
    """
    layout = layout_of(dataset)
    given = {'train': src_train, 'test': src_test}
    if src is None and src_train is None and src_test is None:
        raise PreparationError('Give --src (the folder holding the downloaded splits) or --src-train/--src-test')
    sources = {}
    for split in SPLITS:
        if given[split] is None and src is None:
            continue
        folder = Path(given[split]) if given[split] is not None else _release_folder(dataset, split, src, test_set)
        if not folder.is_dir():
            raise PreparationError(f'{dataset} {split} split: folder {folder} not found'
                                   + ('' if given[split] else f' (expected {layout.folders[split]} '
                                      'inside --src; use --src-train/--src-test for other names)'))
        sources[split] = folder
    return sources


def _release_folder(dataset, split, src, test_set):
    """The split's folder under its release name inside ``src``, with ``test_set`` filled in."""
    sub = LAYOUTS[dataset].folders[split]
    if '{test_set}' in sub:
        if test_set is None:
            found = sorted(p.name for p in (Path(src) / 'test').glob('*') if p.is_dir())
            raise PreparationError(f'{dataset}: choose the test set with --test-set (found in '
                                   f'{Path(src) / "test"}: {", ".join(found) or "nothing"}), or give --src-test')
        sub = sub.format(test_set=test_set)
    return Path(src) / sub
