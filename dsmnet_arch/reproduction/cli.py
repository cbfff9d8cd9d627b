"""Reproduce the paper's Tables 2-5: prepare the downloads, train and test every experiment, compare.

    python scripts/reproduce_paper.py --data DOWNLOADS --out reproduce            # all four tables
    python scripts/reproduce_paper.py --data DOWNLOADS --out reproduce --dry-run  # the plan, at once
    python scripts/reproduce_paper.py ... --dry-run --time-estimate               # and a timed estimate

DOWNLOADS holds Rain100L/, Rain100H/, Rain800/ and Rain1400/, each what
``scripts/prepare_rain_datasets.py --src`` takes. Everything is written under --out: prepared
data, one options file per experiment, BasicSR's experiments/ and results/, logs, and
tables.md / tables.json with the paper's figures beside ours. Running the same command again
continues: finished experiments are skipped, interrupted ones resume. docs/reproduce.md has
the details.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from dsmnet_arch.reproduction.estimate import dry_run
from dsmnet_arch.reproduction.layout import is_prepared, prepared_dir
from dsmnet_arch.reproduction.paper import (
    ALL_TABLES,
    DATASETS,
    DEFAULT_VARIANT,
    NETWORK_TABLE,
    OUR_TABLES,
    PAPER_BATCH,
    TABLES,
)
from dsmnet_arch.reproduction.plan import (
    InputError,
    build_experiments,
    check_overrides,
    make_options,
    row_experiment,
    write_options,
)
from dsmnet_arch.reproduction.report import rainy_scores, write_tables
from dsmnet_arch.reproduction.runner import Runner

OWNED_KEYS = ('name', ) + tuple(f'network_g:{key}' for key in DEFAULT_VARIANT)  # --override may not set them


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line, ``error: ...``, naming the option (exit status 1)."""

    def error(self, message):
        print(f'error: {message}', file=sys.stderr)
        sys.exit(1)


def _table(text):
    if not text.isdigit() or int(text) not in TABLES:
        raise argparse.ArgumentTypeError(f'unknown table {text!r}; the paper tables are {", ".join(map(str, TABLES))}')
    return int(text)


def _scale(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not a fraction in (0, 1]')
    return value


def _positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive whole number')
    return int(text)


def _override(text):
    """``a:b:c=value`` (BasicSR's --force_yml syntax; value read as YAML) -> (['a', 'b', 'c'], value)."""
    key, sep, value = text.partition('=')
    keys = [k.strip() for k in key.split(':')]
    if not sep or not all(keys):
        raise argparse.ArgumentTypeError(f'{text!r} is not KEY=VALUE with KEY like network_g:num_feat')
    if ':'.join(keys) in OWNED_KEYS:
        raise argparse.ArgumentTypeError(f'{":".join(keys)} is set by each experiment itself')
    try:
        return keys, yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f'{text!r}: the value is not valid YAML') from None


def parse_args(argv=None):
    parser = _OneLineParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog='\n\n'.join(__doc__.split('\n\n')[1:]))
    parser.add_argument('--data', required=True,
                        help='folder with Rain100L/, Rain100H/, Rain800/, Rain1400/ as downloaded')
    parser.add_argument('--out', default='reproduce', help='where everything is written (default: ./reproduce)')
    parser.add_argument('--tables', nargs='+', type=_table, default=sorted(TABLES), metavar='N',
                        help='paper tables to reproduce, any of 2 3 4 5 (default: all)')
    parser.add_argument('--gpus', type=_positive, default=1,
                        help='GPUs per training run (torchrun when > 1; batch per GPU 32 / N, 32 in total)')
    parser.add_argument('--jobs', type=_positive, default=1,
                        help='experiments run at once, each on its own --gpus GPUs (default: 1)')
    parser.add_argument('--scale', type=_scale, default=1.,
                        help='fraction of every total_iter, milestone and frequency (at least 1): a smoke run')
    parser.add_argument('--override', action='append', type=_override, default=[], metavar='KEY=VALUE',
                        help='set KEY (BasicSR style, e.g. network_g:num_feat=16) in every generated options file '
                        'that has its parent; repeatable')
    parser.add_argument('--table5-network-level', action='store_true',
                        help='also our second reading of Table 5, its connections as the links between the MABs '
                        '(level_down, level_up, level_dense): an extra table of 4 more runs on Rain100L')
    parser.add_argument('--dry-run', action='store_true',
                        help='list the experiments, commands and iterations at once; run nothing')
    parser.add_argument('--time-estimate', action='store_true',
                        help='with --dry-run: time a training step of every network here for an estimate '
                        '(minutes on a CPU)')
    parser.add_argument('--estimate-iters', type=_positive, default=1,
                        help='timed training iterations per network for --time-estimate (default: 1, after one '
                        'warm-up)')
    args = parser.parse_args(argv)
    if PAPER_BATCH % args.gpus:
        parser.error(f'argument --gpus: the paper\'s batch of {PAPER_BATCH} does not split over {args.gpus} GPUs; '
                     'use 1, 2, 4, 8, 16 or 32')
    if args.time_estimate and not args.dry_run:
        parser.error('argument --time-estimate: only with --dry-run (it times the networks for the plan)')
    args.tables = sorted(set(args.tables))
    return args


def visible_gpus(args):
    """CUDA device ids to hand out (empty without CUDA); checks there are enough for --gpus x --jobs."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [i.strip() for i in listed.split(',') if i.strip()] if listed else []
    ids = ids[:torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]
    if args.gpus * args.jobs > len(ids):
        raise InputError(f'--gpus {args.gpus} x --jobs {args.jobs} needs {args.gpus * args.jobs} GPUs, '
                         f'{len(ids)} visible')
    return ids


def check_data(args, out, experiments):
    """--data must hold, as downloaded, every needed dataset that is not prepared under --out yet."""
    data = Path(args.data)
    if not data.is_dir():
        raise InputError(f'--data {data}: folder not found')
    for dataset in DATASETS:
        tables = sorted({t for exp in experiments if exp.dataset == dataset for t in exp.tables}, key=str)
        if tables and not is_prepared(out, dataset) and not (data / dataset).is_dir():
            raise InputError(f'--data {data}: no folder {dataset}/ (table(s) {", ".join(map(str, tables))} need '
                             f'{dataset} as downloaded, see docs/datasets.md), and {prepared_dir(out, dataset)} '
                             'is not prepared')


def write_all_options(experiments, out, args, cuda):
    """Make and write every experiment's options files, each saying which table rows it fills."""
    for exp in experiments:
        exp.train_opt, exp.test_opt = make_options(exp, out, args, cuda)
        rows = [f'{"our network-level reading of table 5" if t in OUR_TABLES else f"table {t}"} row {r.label}'
                for t in exp.tables for r in ALL_TABLES[t][1] if row_experiment(r) == exp.name]
        write_options(exp, out, ', '.join(rows))


def run_all(runner, experiments, out, args):
    """Score the prepared rainy inputs, then run every experiment, the tables rewritten after each; the exit
    status."""
    settings = {'scale': args.scale, 'gpus': args.gpus, 'tables': args.tables,
                'table5_network_level': args.table5_network_level,
                'overrides': [f'{":".join(keys)}={json.dumps(value)}' for keys, value in args.override]}
    for dataset in DATASETS:
        if is_prepared(out, dataset):
            rainy_scores(out, dataset)
    write_tables(out, runner.failures, settings)

    def experiment(exp, slot):
        runner.experiment(exp, slot)
        with runner.lock:
            write_tables(out, runner.failures, settings)

    runner.map(experiment, experiments)
    write_tables(out, runner.failures, settings)
    print(f'\nTables: {out / "tables.md"} (and tables.json)')
    if runner.failures:
        print(f'{len(runner.failures)} failed (the others ran; the same command again retries them):')
        for name, message in runner.failures.items():
            print(f'  {name}: {message}')
        return 1
    print(f'All {len(experiments)} experiments finished.')
    return 0


def run(experiments, out, args, cuda_ids):
    """Prepare, write the options, then dry-run or run every experiment and write the tables; the exit status."""
    runner = Runner(args, out, cuda_ids)
    if not cuda_ids:
        print('No GPU visible: everything runs on the CPU.', flush=True)
    if not args.dry_run:
        needed = {exp.dataset for exp in experiments}
        runner.map(runner.prepare, [d for d in DATASETS if d in needed and not is_prepared(out, d)])
    write_all_options(experiments, out, args, bool(cuda_ids))
    # One at a time: shortest first, so the tables fill early. Several at once: longest first, the
    # shortest wall time (Rain1400 alone is more than half of all iterations).
    experiments.sort(key=lambda exp: exp.train_opt['train']['total_iter'], reverse=args.jobs > 1)
    if args.dry_run:
        dry_run(experiments, out, args, cuda_ids)
        return 0
    return run_all(runner, experiments, out, args)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out).resolve()
    experiments = build_experiments(args.tables + ([NETWORK_TABLE] if args.table5_network_level else []))
    try:
        check_data(args, out, experiments)
        check_overrides(args.override)
        cuda_ids = visible_gpus(args)
    except InputError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    try:
        return run(experiments, out, args, cuda_ids)
    except KeyboardInterrupt:
        print('\ninterrupted: the same command continues where this run stopped', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
