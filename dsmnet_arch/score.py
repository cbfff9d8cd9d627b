"""Score a folder of derained images against its targets under a published table's protocol.

Usage::

    python -m dsmnet_arch.score RESULTS TARGETS --protocol restormer --csv scores.csv
    dsmnet-score --set Test100 res/Test100 Datasets/test/Test100/target \\
                 --set Rain100H res/Rain100H Datasets/test/Rain100H/target ... --protocol restormer

``--protocol`` (one or more): ``restormer`` (Restormer's / MPRNet's / DRSformer's
``evaluate_PSNR_SSIM.m``: rounded 8-bit Y), ``rcdnet`` (RCDNet's ``statistic.m``, DRSformer's for
DID-Data and DDN-Data: unrounded Y, downsampling SSIM) or ``basicsr`` (BasicSR's ``psnr_y`` /
``ssim_y``, what the options files report as such); ``dsmnet_arch/metrics/protocol_metrics.py`` says
what each computes. Results pair with targets by file name (the extension may differ; ``--suffix``
removes what BasicSR's test.py appends, ``_<options name>``), or with ``--pairing order`` by the
position in the sorted listings (``.jpg`` before ``.png``, as the MATLAB script's ``dir`` calls list
them). It prints each set's mean and, for several sets, the average over the sets (the Rain13K
papers' "average"); ``--csv`` writes one row per image, ``--json`` the means. Every problem (a
missing partner, different counts or sizes, an unreadable or non-8-bit file) is one line
``error: ...`` naming the file, and the exit status is 1 with nothing written.
"""
import argparse
import csv
import io
import json
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

import dsmnet_arch  # noqa: F401  (BasicSR fixes, registers the protocol metrics)
from dsmnet_arch.metrics.protocol_metrics import PROTOCOLS
from dsmnet_arch.utils import IMAGE_EXTENSIONS, atomic_write

from basicsr.metrics import calculate_metric

PAIRINGS = ('name', 'order')
MAX_ERRORS = 20  # lines printed; the rest are counted
_MATLAB_LISTING = {'.jpg': 0, '.png': 1}  # evaluate_PSNR_SSIM.m: [dir('*.jpg'); dir('*.png')]


class ScoreError(Exception):
    """Problems that stop the scoring, one message each."""

    def __init__(self, messages):
        super().__init__('\n'.join(messages))
        self.messages = list(messages)


def list_images(folder, what):
    """The image files of ``folder`` (not its subfolders), sorted by name."""
    if not os.path.isdir(folder):
        raise ScoreError([f'{what} folder {folder} not found'])
    names = sorted(n for n in os.listdir(folder)
                   if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise ScoreError([f'{what} folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})'])
    return names


def pair_by_name(results, targets, result_names, target_names, suffix=''):
    """``([(result, target)], [problem])``: paths of files with the same name less extension (less ``suffix``
    on results), and a line for each file without a partner."""
    errors, by_stem = [], {}
    for name in target_names:
        stem = os.path.splitext(name)[0]
        if stem in by_stem:
            errors.append(f'{os.path.join(targets, by_stem[stem])} and {name} have the same name: which one is the '
                          'target? (--pairing order pairs by position)')
        by_stem[stem] = name
    pairs, used = [], set()
    for name in result_names:
        stem = os.path.splitext(name)[0]
        if suffix:
            if not stem.endswith(suffix):
                errors.append(f'result {os.path.join(results, name)} does not end with --suffix {suffix}')
                continue
            stem = stem[:-len(suffix)]
        if stem not in by_stem:
            hint = '' if suffix else (' (BasicSR\'s test.py names results <image>_<options name>.png: '
                                      '--suffix _<options name>)' if '_' in stem else '')
            errors.append(f'no target for result {os.path.join(results, name)}: no {stem}.* in {targets}{hint}')
            continue
        if stem in used:
            errors.append(f'result {os.path.join(results, name)}: a second result for target {by_stem[stem]}')
            continue
        used.add(stem)
        pairs.append((os.path.join(results, name), os.path.join(targets, by_stem[stem])))
    errors += [f'no result for target {os.path.join(targets, by_stem[s])} in {results}'
               for s in by_stem if s not in used]
    return pairs, errors


def matlab_order(names):
    """``names`` as ``[dir('*.jpg'); dir('*.png')]`` lists them: .jpg files, then .png, then others, each by name."""
    return sorted(names, key=lambda n: (_MATLAB_LISTING.get(os.path.splitext(n)[1], 2), n))


def pair_by_order(results, targets, result_names, target_names):
    """``[(result, target)]``: the i-th result with the i-th target, both in :func:`matlab_order`."""
    result_names, target_names = matlab_order(result_names), matlab_order(target_names)
    if len(result_names) != len(target_names):
        n = min(len(result_names), len(target_names))
        extra = os.path.join(results, result_names[n]) if len(result_names) > n else os.path.join(
            targets, target_names[n])
        raise ScoreError([f'{results} has {len(result_names)} images and {targets} has {len(target_names)}: '
                          f'{extra} has no partner'])
    return [(os.path.join(results, r), os.path.join(targets, t)) for r, t in zip(result_names, target_names)]


def read_image(path):
    """An 8-bit ``H x W x C`` BGR (or one-channel) image; alpha dropped; ValueError saying why not."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot read {path} (not an image, or damaged)')
    if img.dtype != np.uint8:
        raise ValueError(f'{path} is {img.dtype}, not 8-bit: the protocols score 8-bit files')
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] in (2, 4):  # gray or colour with alpha: MATLAB's imread returns the colour alone
        img = img[..., :img.shape[2] - 1]
    return img


def score_pair(result, target, metrics):
    """``{column: value}`` of one pair; ValueError naming the file when it cannot be scored."""
    img, img2 = read_image(result), read_image(target)
    if img.shape != img2.shape:
        raise ValueError(f'result {result} is {img.shape[0]}x{img.shape[1]}x{img.shape[2]}, target {target} is '
                         f'{img2.shape[0]}x{img2.shape[1]}x{img2.shape[2]}')
    scores = {}
    for column, opt in metrics.items():
        try:
            scores[column] = float(calculate_metric({'img': img, 'img2': img2}, opt))
        except ValueError as err:
            raise ValueError(f'{column} of {result}: {err}') from None
    return scores


def metric_columns(protocols):
    """``{'psnr_<protocol>': opt, 'ssim_<protocol>': opt}`` for each protocol, in order."""
    return {f'{m}_{p}': PROTOCOLS[p][m] for p in protocols for m in ('psnr', 'ssim')}


def score_sets(sets, protocols, pairing='name', suffix='', progress=None):
    """Score every set: ``[(name, results, targets, [(result, target, {column: value})])]``.

    ``sets`` is ``[(name, results folder, targets folder)]``. Every pair found is scored, also when
    other files of the set have no partner, so that one run reports every problem; then ScoreError
    is raised with all of them.
    """
    paired, errors = [], []
    for name, results, targets in sets:
        try:
            result_names, target_names = list_images(results, 'results'), list_images(targets, 'targets')
            if pairing == 'name':
                pairs, unpaired = pair_by_name(results, targets, result_names, target_names, suffix)
                errors += unpaired
            else:
                pairs = pair_by_order(results, targets, result_names, target_names)
            paired.append((name, results, targets, pairs))
        except ScoreError as err:
            errors += err.messages
    metrics, scored = metric_columns(protocols), []
    for name, results, targets, pairs in paired:
        rows = []
        for result, target in tqdm(pairs, desc=name, unit='image', disable=progress, file=sys.stderr):
            try:
                rows.append((result, target, score_pair(result, target, metrics)))
            except ValueError as err:
                errors.append(str(err))
        scored.append((name, results, targets, rows))
    if errors:
        raise ScoreError(errors)
    return scored


def summarize(scored, protocols, pairing):
    """Means per set and, for several sets, the average of the set means (the Rain13K papers' average)."""
    columns = list(metric_columns(protocols))
    summary = {'protocols': list(protocols), 'pairing': pairing, 'sets': {}}
    for name, results, targets, rows in scored:
        means = {c: float(np.mean([scores[c] for _, _, scores in rows])) for c in columns}
        summary['sets'][name] = {'results': results, 'targets': targets, 'images': len(rows), **means}
    if len(scored) > 1:
        summary['average_over_sets'] = {c: float(np.mean([s[c] for s in summary['sets'].values()])) for c in columns}
    return summary


def csv_text(scored, protocols):
    columns = list(metric_columns(protocols))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['set', 'result', 'target'] + columns)
    for name, _, _, rows in scored:
        for result, target, scores in rows:
            writer.writerow([name, result, target] + [repr(scores[c]) for c in columns])
    return buffer.getvalue()


def table_text(summary):
    columns = [c for p in summary['protocols'] for c in (f'psnr_{p}', f'ssim_{p}')]
    entries = [(name, str(s['images']), s) for name, s in summary['sets'].items()]
    if 'average_over_sets' in summary:
        entries.append((f'average over {len(summary["sets"])} sets', '', summary['average_over_sets']))
    width = max(len(e[0]) for e in entries + [('set', )])
    lines = [f'{"set":<{width}}  {"images":>6}' + ''.join(f'  {c:>16}' for c in columns)]
    for name, images, values in entries:
        cells = ''.join(f'  {values[c]:>16.4f}' if c.startswith('ssim') else f'  {values[c]:>16.2f}' for c in columns)
        lines.append(f'{name:<{width}}  {images:>6}' + cells)
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='dsmnet-score', description=__doc__.split('\n\n')[0],
        epilog='Example: dsmnet-score results/test_DSMNet_Rain200H/visualization/Rain200H '
        'datasets/Rain200H/test/target --suffix _test_DSMNet_Rain200H --protocol restormer --csv Rain200H.csv')
    parser.add_argument('results', nargs='?', help='folder of result images (one set, named after the folder)')
    parser.add_argument('targets', nargs='?', help='folder of target (clean) images')
    parser.add_argument('--set', nargs=3, action='append', default=[], metavar=('NAME', 'RESULTS', 'TARGETS'),
                        help='a named set; repeat for several sets (their average is printed too)')
    parser.add_argument('--protocol', nargs='+', choices=list(PROTOCOLS), default=['restormer'],
                        help='restormer (default), rcdnet, basicsr; several give columns for each')
    parser.add_argument('--pairing', choices=PAIRINGS, default='name',
                        help='name (default): same file name, any extension; order: by position in the sorted '
                        'listings, as the MATLAB script pairs them')
    parser.add_argument('--suffix', default='', help='removed from the end of each result name before pairing by '
                        'name (BasicSR\'s test.py appends _<options name>)')
    parser.add_argument('--csv', help='write one row per image here')
    parser.add_argument('--json', help='write the means here')
    args = parser.parse_args(argv)
    if (args.results is None) != (args.targets is None):
        parser.error('give both RESULTS and TARGETS')
    if args.results is None and not args.set:
        parser.error('give RESULTS TARGETS, or --set NAME RESULTS TARGETS')
    if args.suffix and args.pairing != 'name':
        parser.error('--suffix is for --pairing name')
    args.sets = ([(os.path.basename(os.path.normpath(args.results)) or args.results, args.results, args.targets)]
                 if args.results is not None else []) + [tuple(s) for s in args.set]
    names = [s[0] for s in args.sets]
    if len(set(names)) != len(names):
        parser.error(f'two sets are named {next(n for n in names if names.count(n) > 1)}')
    args.protocol = list(dict.fromkeys(args.protocol))
    return args


def main(argv=None):
    args = parse_args(argv)
    errors = [f'--{key} {path}: folder {os.path.dirname(os.path.abspath(path))} not found'
              for key, path in (('csv', args.csv), ('json', args.json))
              if path and not os.path.isdir(os.path.dirname(os.path.abspath(path)))]
    try:
        if errors:
            raise ScoreError(errors)
        scored = score_sets(args.sets, args.protocol, args.pairing, args.suffix)
    except ScoreError as err:
        for message in err.messages[:MAX_ERRORS]:
            print(f'error: {message}', file=sys.stderr)
        if len(err.messages) > MAX_ERRORS:
            print(f'error: ... and {len(err.messages) - MAX_ERRORS} more', file=sys.stderr)
        return 1
    summary = summarize(scored, args.protocol, args.pairing)
    if args.csv:
        text = csv_text(scored, args.protocol)
        atomic_write(args.csv, lambda f: f.write(text.encode()))
    if args.json:
        text = json.dumps(summary, indent=2) + '\n'
        atomic_write(args.json, lambda f: f.write(text.encode()))
    print(table_text(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
