"""tables.md and tables.json: the paper's figures beside ours, and the rainy input's scores that tell which colour
space and protocol the paper measured in."""
import os
import time

from dsmnet_arch.reproduction.layout import prepared_dir, read_json, run_dir, write_json, write_text
from dsmnet_arch.reproduction.paper import ALL_TABLES, DATASETS, METRICS, OUR_TABLES, PAPER_RAINY, SPACES
from dsmnet_arch.reproduction.plan import row_experiment

MATCH_DB = 0.3  # a colour space "matches" the paper's Rainy row within this mean PSNR difference


def rainy_scores(out, dataset):
    """PSNR/SSIM of the prepared test inputs against their targets, in each of SPACES (cached in runs/)."""
    cache = out / 'runs' / f'rainy_{dataset}.json'
    scores = read_json(cache)
    if scores is not None and all(m in scores for m in METRICS):  # older caches lack the protocol columns
        return scores
    import cv2

    import dsmnet_arch  # noqa: F401  (BasicSR fixes before basicsr is imported)
    from dsmnet_arch.metrics.protocol_metrics import PROTOCOLS

    from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim

    test = prepared_dir(out, dataset) / 'test'
    sums = dict.fromkeys(METRICS, 0.)
    names = sorted(os.listdir(test / 'target'))
    for name in names:
        # BGR uint8, as BasicSR's test compares its output (tensor2img) with the target
        gt = cv2.imread(str(test / 'target' / name), cv2.IMREAD_COLOR)
        lq = cv2.imread(str(test / 'input' / name), cv2.IMREAD_COLOR)
        for space, y_channel in (('y', True), ('rgb', False)):
            sums[f'psnr_{space}'] += calculate_psnr(lq, gt, crop_border=0, test_y_channel=y_channel)
            sums[f'ssim_{space}'] += calculate_ssim(lq, gt, crop_border=0, test_y_channel=y_channel)
        for protocol in ('restormer', 'rcdnet'):
            for m, opt in PROTOCOLS[protocol].items():
                sums[f'{m}_y_{protocol}'] += calculate_metric({'img': lq, 'img2': gt}, opt)
    scores = {key: float(value) / len(names) for key, value in sums.items()}
    scores['images'] = len(names)
    write_json(cache, scores)
    return scores


# ---------------------------------------------------------------------------------------------
# tables.md and tables.json


def _cell(psnr, ssim, signed=False):
    sign = '+' if signed else ''
    return f'{psnr:{sign}.2f} / {ssim:{sign}.4f}'


def _compare(paper, ours):
    """A row's figures: the paper's, ours in each of SPACES, and ours minus the paper's (None where missing:
    runs tested before the protocol columns have none)."""
    row = {'paper': {'psnr': float(paper[0]), 'ssim': float(paper[1])}, 'paper_printed': ' / '.join(paper)}
    paper = row['paper']
    for space in SPACES:
        got = {m: ours[f'{m}_{space}'] for m in ('psnr', 'ssim')} if ours and f'psnr_{space}' in ours else None
        row[space] = got
        row[f'{space}_minus_paper'] = {m: got[m] - paper[m] for m in paper} if got else None
    return row


def _md_row(cells):
    return '| ' + ' | '.join(cells) + ' |'


def _md_figure_headers():
    return [cell for name in SPACES.values() for cell in (f'ours {name}', f'{name} - paper')]


def _md_figures(row):
    cells = [row['paper_printed']]
    for space in SPACES:
        got, diff = row[space], row[f'{space}_minus_paper']
        cells += [_cell(got['psnr'], got['ssim']), _cell(diff['psnr'], diff['ssim'], True)] if got else ['-', '-']
    return cells


def colour_space_verdict(rainy_rows):
    """Which of our colour spaces and protocols (SPACES) reproduces the paper's Rainy row: (space or None,
    one-line explanation). The closest PSNR to 0.01 dB decides (Y and RCDNet Y have the same PSNR), then SSIM."""
    if not rainy_rows:
        return None, 'No test set is prepared yet, so the rainy input has not been scored.'
    rows = [r for r in rainy_rows if all(r[space] for space in SPACES)]
    if not rows:
        return None, 'The rainy input has not been scored in every colour space and protocol yet.'
    mean = {space: {m: sum(abs(r[f'{space}_minus_paper'][m]) for r in rows) / len(rows) for m in ('psnr', 'ssim')}
            for space in SPACES}
    closer = min(SPACES, key=lambda space: (round(mean[space]['psnr'], 2), mean[space]['ssim']))
    names = SPACES
    figures = f'mean |ours - paper| over {len(rows)} test set(s): ' + ', '.join(
        f'{mean[space]["psnr"]:.2f} dB / {mean[space]["ssim"]:.4f} on {names[space]}'
        for space in sorted(SPACES, key=lambda space: space != closer))
    mean = {space: mean[space]['psnr'] for space in SPACES}
    if mean[closer] <= MATCH_DB:
        return closer, (f'**The paper\'s Rainy row matches our {names[closer]} scores** ({figures}): compare the '
                        f'paper\'s figures with the "ours {names[closer]}" columns.')
    return None, (f'**No colour space or protocol matches the paper\'s Rainy row within {MATCH_DB} dB** ({figures}; '
                  f'{names[closer]} is closer): these test images are not the paper\'s, or the paper measured '
                  'otherwise.')


def collect_tables(out, failures, settings):
    """Everything tables.md shows, as one JSON-ready dict, from the files under ``out``."""
    rainy = {}
    for dataset in DATASETS:
        scores = read_json(out / 'runs' / f'rainy_{dataset}.json')
        if scores is not None:
            rainy[dataset] = {**_compare(PAPER_RAINY[dataset], scores), 'images': scores['images']}
    space, verdict = colour_space_verdict(list(rainy.values()))
    tables = {}
    for number, (title, rows) in ALL_TABLES.items():
        if number in OUR_TABLES and not settings.get('table5_network_level') and not any(
                (run_dir(out, row_experiment(row)) / 'metrics.json').is_file() for row in rows if row.variant):
            continue  # the extra table: when asked for, or when one of its own runs has finished
        entries = []
        for row in rows:
            name = row_experiment(row)
            metrics = read_json(run_dir(out, name) / 'metrics.json')
            state = 'done' if metrics else f'failed: {failures[name]}' if name in failures else 'not finished'
            entries.append({'label': row.label, 'dataset': row.dataset, 'experiment': name, 'status': state,
                            'total_iter': metrics['total_iter'] if metrics else None, **_compare(row.paper, metrics)})
        tables[str(number)] = {'title': title, 'rows': entries, 'ours': number in OUR_TABLES}
    return {'generated': time.strftime('%Y-%m-%d %H:%M:%S'), 'settings': settings,
            'colour_space': {'matches': space, 'verdict': verdict, 'rainy_input': rainy}, 'tables': tables}


COLUMNS = (
    'Columns: **paper** is PSNR (dB) / SSIM as printed in the paper. **ours Y** is ours on the Y channel '
    'of YCbCr (BasicSR\'s `calculate_psnr`/`calculate_ssim`, `test_y_channel: true`, no border crop), '
    'the mean over the test set; **ours RGB** the same on the three RGB channels; **ours Restormer Y** '
    'and **ours RCDNet Y** are Y as the field\'s two families of MATLAB scripts score it (Restormer\'s '
    '`evaluate_PSNR_SSIM.m`: Y rounded to 8 bits; RCDNet\'s `statistic.m`: the PSNR of ours Y, an SSIM that '
    'downsamples; docs/datasets.md). **... - paper** is ours minus the paper\'s figure (positive: ours is '
    'higher). **experiment** is the run behind the row: `experiments/`, `results/`, `runs/` and '
    '`options/*_<experiment>.yml` under the output folder. The paper does not say how it measured; the '
    'next section tells which of our columns to compare with it.')
NETWORK_LEVEL_NOTE = (
    'The paper\'s Table 5 names Across-Down, Across-Up and Dense-Fusion as "connection operations of '
    'MAB" without saying where they act. The table above reads them as connections between the '
    'MAB\'s kernel branches (our reading of eq. 5-10); this one reads them as the links between the '
    'MABs of the network (level_down, level_up, level_dense), each MAB the full M5. The "paper" '
    'column repeats its Table 5. The reading whose rows follow the paper\'s order (M1 lowest, M5 '
    'highest, M3 above M4 above M2) is the more plausible one; docs/reproduce.md says how to read '
    'the two.')


def _md_intro(report):
    """The title, the run's settings and what the columns mean."""
    settings = report['settings']
    lines = [
        '# DSM-Net (Li et al., CVPRW 2022): the paper\'s tables and ours', '',
        f'Written by `scripts/reproduce_paper.py` on {report["generated"]}; scale {settings["scale"]}, '
        f'{settings["gpus"]} GPU(s) per run, overrides: {", ".join(settings["overrides"]) or "none"}.', ''
    ]
    if settings['scale'] != 1 or settings['overrides']:
        lines += ['**Not the paper\'s settings** (--scale or --override): a smoke run, not comparable with the paper.',
                  '']
    return lines + [COLUMNS, '']


def _md_colour_space(colour_space):
    """The section on the rainy input's scores and which colour space and protocol match the paper's."""
    lines = [
        '## Which colour space and protocol did the paper measure?', '',
        'Its Table 2 "Rainy" row scores the rainy input itself, which no training changes: ours for the same '
        'test images, in each colour space and protocol.', '',
        _md_row(['test set', 'images', 'paper (Rainy)'] + _md_figure_headers()),
        _md_row(['---'] * 2 + ['---:'] * (1 + 2 * len(SPACES))),
    ]
    rainy = colour_space['rainy_input']
    for dataset in DATASETS:
        if dataset in rainy:
            lines.append(_md_row([dataset, str(rainy[dataset]['images'])] + _md_figures(rainy[dataset])))
        else:
            lines.append(_md_row([dataset, '-', ' / '.join(PAPER_RAINY[dataset])] + ['-'] * (2 * len(SPACES))))
    return lines + ['', colour_space['verdict'], '']


def _md_table(table):
    """One table's section (ours after a note saying it is not the paper's)."""
    lines = ['## Not in the paper: Table 5 read as the links between the MABs', '', NETWORK_LEVEL_NOTE, '']
    lines = lines if table.get('ours') else []
    lines += [f'## {table["title"]}', '',
              _md_row(['row', 'paper'] + _md_figure_headers() + ['experiment', 'status']),
              _md_row(['---'] + ['---:'] * (1 + 2 * len(SPACES)) + ['---'] * 2)]
    for entry in table['rows']:
        state = entry['status'].replace('|', '\\|')  # a log line may hold one
        lines.append(_md_row([entry['label']] + _md_figures(entry) + [f'`{entry["experiment"]}`', state]))
    return lines + ['']


def render_tables(report):
    """tables.md from :func:`collect_tables`' dict."""
    lines = _md_intro(report) + _md_colour_space(report['colour_space'])
    for table in report['tables'].values():
        lines += _md_table(table)
    return '\n'.join(lines)


def write_tables(out, failures, settings):
    report = collect_tables(out, failures, settings)
    write_json(out / 'tables.json', report)
    write_text(out / 'tables.md', render_tables(report))
