"""Make a downloaded deraining set ready for BasicSR's PairedImageDataset (docs/datasets.md).

    python scripts/prepare_rain_datasets.py --dataset Rain100H --src ~/Downloads/rain --lmdb

writes datasets/Rain100H/{train,test}/{input,target}/ (and input.lmdb, target.lmdb), prints a
report, and exits with status 1 and a one-line error naming the file on a fatal problem. Rain13K
writes its five test sets to datasets/Rain13K/test/<set>/{input,target}/.
"""
import argparse
import os
import sys

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from dsmnet_arch.preparation import DATASETS, LAYOUTS, PreparationError, prepare_dataset, resolve_sources  # noqa: E402


def _names(layout, split):
    """A split's release folder name(s) for the help text."""
    folders = layout.folders[split]
    if folders is None:
        return f'(not confirmed: give --src-{split})'
    names = folders if isinstance(folders, str) else ' or '.join(folders)
    return names + (f', holding {", ".join(layout.test_sets)}' if split == 'test' and layout.test_sets else '')


EPILOG = 'Release folder names looked up inside --src:\n' + '\n'.join(
    f'  {name:9s} train: {_names(layout, "train")}\n  {"":9s} test:  {_names(layout, "test")}'
    for name, layout in LAYOUTS.items())
EPILOG += '''

Give --src-train/--src-test instead (or as well) for folders with other names, or to prepare one
split only. Problems (unreadable, empty or truncated files, pairs of different sizes, unpaired
files, clashing names) stop the run before anything is written, unless --skip-bad. A split that
is already prepared in --dst is left as it is; --lmdb on a second run adds the missing LMDBs.'''


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', required=True, choices=DATASETS, help='which release the sources are')
    parser.add_argument('--src', help='folder holding the downloaded split folders under their release names')
    parser.add_argument('--src-train', help='the training split folder as downloaded (e.g. .../RainTrainH)')
    parser.add_argument('--src-test', help='the test split folder as downloaded (e.g. .../Rain100H; Rain13K: the '
                        'folder holding its test sets)')
    parser.add_argument('--test-set', action='append', metavar='SET',
                        help='Rain13K: prepare only this test set (repeat for several; default: all five)')
    parser.add_argument('--dst', help='output folder (default: datasets/<dataset>)')
    parser.add_argument('--lmdb', action='store_true', help='also build <split>/input.lmdb and target.lmdb')
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0-9',
                        help='PNG compression level of the PNGs written (LMDB, Rain800 halves); default 1')
    parser.add_argument('--skip-bad', action='store_true', help='leave out pairs with problems instead of stopping')
    parser.add_argument('--workers', type=int, default=None, help='threads decoding images for the checks')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        sources = resolve_sources(args.dataset, args.src, args.src_train, args.src_test, args.test_set)
        report = prepare_dataset(args.dataset, sources, args.dst or os.path.join('datasets', args.dataset),
                                 lmdb=args.lmdb, compress_level=args.compress_level, skip_bad=args.skip_bad,
                                 workers=args.workers, progress=True)
    except PreparationError as err:
        if err.report is not None:
            print(err.report)
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
