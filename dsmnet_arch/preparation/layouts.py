"""The releases as users download them: each one's split folders, pair names and published pair counts.

Adding a release is local to this file: write its ``discover(folder, problems, ignored)``
function from the pieces of :mod:`dsmnet_arch.preparation.discovery` and give it an entry in
:data:`LAYOUTS`; ``--dataset`` of ``scripts/prepare_rain_datasets.py`` then offers it
(docs/datasets.md describes each layout for users, and where each fact about it comes from).
"""
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from dsmnet_arch.preparation.discovery import (
    files_by_key,
    has_paired_folders,
    images_in,
    keyed_images,
    listed_pairs,
    match_pairs,
    side_by_side,
    subfolder,
)
from dsmnet_arch.preparation.report import PreparationError

SPLITS = ('train', 'test')


class Layout(NamedTuple):
    """How one release is arranged.

    Attributes:
        folders (dict[str, str | tuple[str] | None]): Split -> the split's folder inside ``--src``:
            a path, several (the first that exists is taken: the same data as packed by different
            code bases), or None where the release's name for it is not known (``--src-<split>``
            gives it).
        discover (callable): ``discover(folder, problems, ignored) -> list[Pair]`` for one split's
            folder; it appends what cannot pair to ``problems`` (a list of
            :class:`~dsmnet_arch.preparation.report.Problem`) and the files that fit no name of the
            layout to ``ignored``.
        paper_pairs (dict[str, int] | None): Split -> the pair count of the paper that defines the
            protocol (DSM-Net's paper for its four sets); a different count is reported as a warning.
        test_sets (tuple[str]): Several test sets: the test folder holds one folder per set, and each
            is prepared as its own split, ``test/<set>``.
        known_pairs (dict[tuple[str, int], str] | None): (split, count) -> why a download is known to
            hold this count instead of the paper's; the warning says so.
    """
    folders: dict
    discover: Callable
    paper_pairs: Optional[dict] = None
    test_sets: tuple = ()
    known_pairs: Optional[dict] = None


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
    return side_by_side(images_in(folder, ignored), rainy='right')


def discover_rain1400(folder, problems, ignored):
    """Rain1400 (DDN): ``rainy_image/N_M.jpg`` (M = 1..14) all share ``ground_truth/N.jpg``; pairs keep
    the rainy name."""
    rainy = keyed_images(subfolder(folder, 'rainy_image', 'Rain1400'), r'(\d+_\d+)', ignored, problems)
    clean = keyed_images(subfolder(folder, 'ground_truth', 'Rain1400'), r'(\d+)', ignored, problems)
    return match_pairs(rainy, clean, problems, target_key=lambda key: key.split('_')[0])


def discover_paired_folders(folder, problems, ignored):
    """``input/X`` and ``target/X`` (Rain13K, Rain200L/H, re-packed copies, our own output): the same name,
    the extension may differ (the pair is then written as ``X.png``)."""
    inputs = keyed_images(subfolder(folder, 'input', 'paired'), r'(.+)', ignored, problems)
    targets = keyed_images(subfolder(folder, 'target', 'paired'), r'(.+)', ignored, problems)
    return match_pairs(inputs, targets, problems, mixed_extensions=True)


DID_DENSITIES = ('Rain_Heavy', 'Rain_Medium', 'Rain_Light')


def discover_did(folder, problems, ignored):
    """DID-Data (DID-MDN): side-by-side JPGs, rainy LEFT half, clean RIGHT half (Rain800's reverse).

    The training folder holds ``Rain_Heavy/``, ``Rain_Medium/`` and ``Rain_Light/``, each with
    ``train2018new/<idx>.jpg``; all three must be there, and pairs are named ``Heavy_<idx>.png``
    and so on. Another folder: its side-by-side images (``<name>.png``), or ``input/`` and
    ``target/`` (a re-packed copy).
    """
    folder = Path(folder)
    if has_paired_folders(folder):
        return discover_paired_folders(folder, problems, ignored)
    if not any((folder / density).exists() for density in DID_DENSITIES):
        return side_by_side(images_in(folder, ignored), rainy='left')
    return [pair for density in DID_DENSITIES for pair in side_by_side(
        images_in(subfolder(folder / density, 'train2018new', 'DID-Data'), ignored), rainy='left',
        prefix=density.removeprefix('Rain_') + '_')]


SPA_LISTS = ('real_world.txt', 'real_test_1000.txt')


def discover_spa(folder, problems, ignored):
    """SPA-Data (SPANet): the pairs listed in ``real_world.txt`` (train) or ``real_test_1000.txt`` (test), one
    ``<rainy> <clean>`` line each, several frames sharing one clean image; or ``input/`` and ``target/``
    (DRSformer's re-packed copy)."""
    folder = Path(folder)
    if has_paired_folders(folder):
        return discover_paired_folders(folder, problems, ignored)
    lists = [folder / name for name in SPA_LISTS if (folder / name).is_file()]
    if len(lists) != 1:
        raise PreparationError(f'SPA-Data layout: {folder} holds ' + (
            f'both {" and ".join(SPA_LISTS)}; give each split\'s folder' if lists else
            f'neither input/ and target/ nor a pair list ({" or ".join(SPA_LISTS)})'))
    return listed_pairs(lists[0], problems)


RAIN13K_TEST_SETS = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')

LAYOUTS = {
    'Rain100L': Layout({'train': 'RainTrainL', 'test': 'Rain100L'}, discover_rain100, {'train': 200, 'test': 100}),
    'Rain100H': Layout({'train': 'RainTrainH', 'test': 'Rain100H'}, discover_rain100, {'train': 1800, 'test': 100}),
    'Rain800': Layout({'train': 'training', 'test': 'test_syn'}, discover_rain800, {'train': 700, 'test': 100}),
    'Rain1400': Layout({'train': 'Rain12600', 'test': 'Rain1400'}, discover_rain1400, {'train': 12600, 'test': 1400}),
    'Rain13K': Layout(
        {'train': ('train/Rain13K', 'train', 'Synthetic_Rain_Datasets/train'),
         'test': ('test', 'Synthetic_Rain_Datasets/test')}, discover_paired_folders,
        {'train': 13712, 'test/Test100': 100, 'test/Rain100H': 100, 'test/Rain100L': 100, 'test/Test2800': 2800,
         'test/Test1200': 1200}, RAIN13K_TEST_SETS,
        {('train', 13711): 'the Rain13K download is reported to hold 13,711 (total_iter needs no change)',
         ('test/Test100', 98): 'the Test100 download is reported to hold 98'}),
    'Rain200L': Layout({'train': ('train/Rain200L', 'Rain200L/train'), 'test': ('test/Rain200L', 'Rain200L/test')},
                       discover_paired_folders, {'train': 1800, 'test': 200}),
    'Rain200H': Layout({'train': ('train/Rain200H', 'Rain200H/train'), 'test': ('test/Rain200H', 'Rain200H/test')},
                       discover_paired_folders, {'train': 1800, 'test': 200}),
    'DID-Data': Layout({'train': 'DID-MDN-training', 'test': None}, discover_did, {'train': 12000, 'test': 1200}),
    # SPA-Data's training count differs between releases (docs/datasets.md): only the test count is compared
    'SPA-Data': Layout({'train': 'training', 'test': 'testing'}, discover_spa, {'test': 1000}),
}
DATASETS = tuple(LAYOUTS)


def layout_of(dataset):
    """The :class:`Layout` of ``dataset``; PreparationError naming the choices for an unknown one."""
    if dataset not in LAYOUTS:
        raise PreparationError(f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}')
    return LAYOUTS[dataset]


def resolve_sources(dataset, src=None, src_train=None, src_test=None, test_sets=None):
    """Map each split to prepare to its source folder.

    Args:
        dataset (str): One of :data:`DATASETS`.
        src (str | Path | None): Folder holding the downloaded split folders under their release
            names (:attr:`Layout.folders`); both splits are then required.
        src_train (str | Path | None): The training split's folder; overrides ``src``.
        src_test (str | Path | None): The test split's folder (for a release with several test sets,
            the folder holding them); overrides ``src``.
        test_sets (list[str] | None): A release with several test sets (Rain13K): the ones to prepare;
            None: all of :attr:`Layout.test_sets`.

    Returns:
        dict[str, Path]: split name (``train``, ``test``, or ``test/<set>``) -> existing folder.
    """
    layout = layout_of(dataset)
    if test_sets and not layout.test_sets:
        several = ', '.join(name for name, other in LAYOUTS.items() if other.test_sets)
        raise PreparationError(f'--test-set: {dataset} has one test set; only {several} holds several')
    given = {'train': src_train, 'test': src_test}
    if src is None and src_train is None and src_test is None:
        raise PreparationError('Give --src (the folder holding the downloaded splits) or --src-train/--src-test')
    sources = {}
    for split in SPLITS:
        if given[split] is None and src is None:
            continue
        folder = Path(given[split]) if given[split] is not None else _release_folder(dataset, split, src)
        if not folder.is_dir():
            raise PreparationError(f'{dataset} {split} split: folder {folder} not found')
        if split == 'test' and layout.test_sets:
            for name in test_sets or layout.test_sets:
                if not (folder / name).is_dir():
                    raise PreparationError(f'{dataset} test set {name}: folder {folder / name} not found'
                                           + ('' if test_sets else ' (--test-set names the sets to prepare)'))
                sources[f'test/{name}'] = folder / name
        else:
            sources[split] = folder
    return sources


def _release_folder(dataset, split, src):
    """The split's folder under its release name inside ``src``: the first of the layout's names that exists."""
    names = LAYOUTS[dataset].folders[split]
    if names is None:
        raise PreparationError(f'{dataset} {split} split: the release\'s name for its folder is not confirmed; '
                               f'give the folder with --src-{split}')
    names = (names, ) if isinstance(names, str) else names
    for name in names:
        if (Path(src) / name).is_dir():
            return Path(src) / name
    raise PreparationError(f'{dataset} {split} split: folder {" or ".join(str(Path(src) / n) for n in names)} not '
                           'found (use --src-train/--src-test for other names)')
