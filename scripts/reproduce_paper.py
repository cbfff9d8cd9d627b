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
import copy
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import yaml

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REPO = Path(__file__).resolve().parent.parent
TRAIN_ENTRY = REPO / 'dsmnet_arch' / 'train.py'
TEST_ENTRY = REPO / 'dsmnet_arch' / 'test.py'
PREPARE_ENTRY = REPO / 'scripts' / 'prepare_rain_datasets.py'

DATASETS = ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400')
PAPER_PAIRS = {  # training / test pairs the paper counts; the shipped total_iter assumes them
    'Rain100L': (200, 100),
    'Rain100H': (1800, 100),
    'Rain800': (700, 100),
    'Rain1400': (12600, 1400),
}
PAPER_BATCH = 32
PAPER_RAINY = {  # Table 2, "Rainy": the score of the rainy input itself (PSNR, SSIM)
    'Rain100L': ('26.91', '0.838'),
    'Rain100H': ('13.35', '0.388'),
    'Rain800': ('21.16', '0.652'),
    'Rain1400': ('25.24', '0.810'),
}
# The paper's DSM-Net: its attention and subspaces, and all of Table 5's connections (in the MAB, and the
# network links of our reconstruction that the second reading of Table 5 switches).
DEFAULT_VARIANT = {'attention': 'ca+sa', 'num_subspaces': 8, 'mab_variant': 'M5', 'level_down': True, 'level_up': True,
                   'level_dense': True}
# Paper Table 5: the connections each variant keeps (Across-Down, Across-Up, Dense-Fusion), and its Rain100L
# PSNR/SSIM. Read as connections inside the MAB they are mab_variant (the table we reproduce); read as the
# links between the MABs they are DSMNet's level_down, level_up, level_dense (an extra table of ours).
TABLE5 = {
    'M1': ((False, False, False), ('36.15', '0.9757')),
    'M2': ((True, True, False), ('36.40', '0.9760')),
    'M3': ((True, False, True), ('36.65', '0.9770')),
    'M4': ((False, True, True), ('36.44', '0.9765')),
    'M5': ((True, True, True), ('38.27', '0.9829')),
}
LEVEL_KEYS = ('level_down', 'level_up', 'level_dense')  # Across-Down, Across-Up, Dense-Fusion between the MABs
NETWORK_TABLE = '5n'  # the key of the extra table (--table5-network-level)
# What the shipped test options report for the paper's sets: BasicSR's Y and RGB, and Y as the field's two
# families of MATLAB scripts score it (dsmnet_arch/metrics/protocol_metrics.py); metric names <psnr|ssim>_<space>.
SPACES = {'y': 'Y', 'rgb': 'RGB', 'y_restormer': 'Restormer Y', 'y_rcdnet': 'RCDNet Y'}
METRICS = tuple(f'{m}_{space}' for space in SPACES for m in ('psnr', 'ssim'))
MATCH_DB = 0.3  # a colour space "matches" the paper's Rainy row within this mean PSNR difference
ESTIMATE_IMAGE = (321, 481)  # Rain100L/H test images: the test-time estimate times one of this size
OWNED_KEYS = ('name', ) + tuple(f'network_g:{key}' for key in DEFAULT_VARIANT)  # --override may not set them


@dataclass(frozen=True)
class Row:
    """One row of a paper table: its label, test set, network arguments and the paper's PSNR/SSIM."""
    label: str
    dataset: str
    variant: tuple  # ((argument, value), ...) that differ from DEFAULT_VARIANT
    paper: tuple  # (PSNR, SSIM) as printed


def _ablation(label, key, value, psnr, ssim):
    return Row(label, 'Rain100L', ((key, value), ) if value != DEFAULT_VARIANT[key] else (), (psnr, ssim))


TABLES = {
    2: ('Table 2: DSM-Net on the four test sets', [
        Row('Rain100L', 'Rain100L', (), ('38.27', '0.982')),
        Row('Rain100H', 'Rain100H', (), ('28.62', '0.902')),
        Row('Rain800', 'Rain800', (), ('27.76', '0.871')),
        Row('Rain1400', 'Rain1400', (), ('30.93', '0.929')),
    ]),
    3: ('Table 3: CADB attention branches (Rain100L)', [
        _ablation('CA', 'attention', 'ca', '37.36', '0.976'),
        _ablation('SP', 'attention', 'sp', '37.90', '0.980'),
        _ablation('SA', 'attention', 'sa', '37.08', '0.978'),
        _ablation('CA+SP', 'attention', 'ca+sp', '38.21', '0.981'),
        _ablation('SP+SA', 'attention', 'sp+sa', '37.86', '0.981'),
        _ablation('CA+SA', 'attention', 'ca+sa', '38.27', '0.982'),
    ]),
    4: ('Table 4: number of subspaces n of the subspace attention (Rain100L)', [
        _ablation('n = 4', 'num_subspaces', 4, '38.08', '0.9825'),
        _ablation('n = 8', 'num_subspaces', 8, '38.27', '0.9829'),
        _ablation('n = 16', 'num_subspaces', 16, '38.11', '0.9826'),
    ]),
    5: ('Table 5: connections inside the MAB (Rain100L)',
        [_ablation(label, 'mab_variant', label, *paper) for label, (_, paper) in TABLE5.items()]),
}


def _network_level(label, connections, paper):
    variant = tuple((key, on) for key, on in zip(LEVEL_KEYS, connections) if on != DEFAULT_VARIANT[key])
    return Row(label, 'Rain100L', variant, paper)


# Not a table of the paper: its Table 5 read as the links between the MABs. Only with --table5-network-level.
OUR_TABLES = {
    NETWORK_TABLE: ('Table 5, network-level reading (ours, not an experiment of the paper): Across-Down, Across-Up '
                    'and Dense-Fusion as the links between the MABs (level_down, level_up, level_dense), every MAB '
                    'the full M5 (Rain100L)',
                    [_network_level(label, connections, paper) for label, (connections, paper) in TABLE5.items()]),
}
ALL_TABLES = {**TABLES, **OUR_TABLES}


class InputError(ValueError):
    """Bad command-line input; the message is one line naming the option or folder."""


@dataclass
class Experiment:
    """One training run and its test; rows of several tables may share it (the default model)."""
    name: str
    dataset: str
    variant: dict
    tables: list = field(default_factory=list)
    train_opt: dict = None
    test_opt: dict = None


def experiment_name(dataset, variant):
    """``DSMNet_<dataset>`` plus what differs from the paper's model: ``_CA+SP``, ``_n4``, ``_M1``, and ``_netM1``
    for the network links of Table 5's M1 (see TABLE5)."""
    parts = [f'DSMNet_{dataset}']
    if variant['attention'] != DEFAULT_VARIANT['attention']:
        parts.append(variant['attention'].upper())
    if variant['num_subspaces'] != DEFAULT_VARIANT['num_subspaces']:
        parts.append(f'n{variant["num_subspaces"]}')
    if variant['mab_variant'] != DEFAULT_VARIANT['mab_variant']:
        parts.append(variant['mab_variant'])
    links = tuple(variant[key] for key in LEVEL_KEYS)
    if links != tuple(DEFAULT_VARIANT[key] for key in LEVEL_KEYS):
        parts.append('net' + next((label for label, (connections, _) in TABLE5.items() if connections == links),
                                  ''.join('1' if on else '0' for on in links)))
    return '_'.join(parts)


def row_experiment(row):
    """The name of the experiment that fills ``row``."""
    return experiment_name(row.dataset, {**DEFAULT_VARIANT, **dict(row.variant)})


def build_experiments(tables):
    """The experiments the chosen tables (keys of ALL_TABLES) need, in table order, each once."""
    experiments = {}
    for table in sorted(tables, key=str):
        for row in ALL_TABLES[table][1]:
            name = row_experiment(row)
            exp = experiments.setdefault(name, Experiment(name, row.dataset, {**DEFAULT_VARIANT, **dict(row.variant)}))
            if table not in exp.tables:
                exp.tables.append(table)
    return list(experiments.values())


# ---------------------------------------------------------------------------------------------
# Command line


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


# ---------------------------------------------------------------------------------------------
# Files under --out


def prepared_dir(out, dataset):
    return out / 'datasets' / dataset


def is_prepared(out, dataset):
    return all((prepared_dir(out, dataset) / split / 'prepared.json').is_file() for split in ('train', 'test'))


def pair_count(out, dataset, split):
    """Pairs of a prepared split (files in its input/), or None when it is not prepared."""
    if not is_prepared(out, dataset):
        return None
    return sum(1 for entry in os.scandir(prepared_dir(out, dataset) / split / 'input') if entry.is_file())


def run_dir(out, name):
    return out / 'runs' / name


def options_path(out, phase, name):
    return out / 'options' / f'{phase}_{name}.yml'


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + '\n')


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


# ---------------------------------------------------------------------------------------------
# Options


def _scaled(value, factor):
    return max(1, round(value * factor))


def _set(opt, keys, value):
    """Set ``opt[k0][k1]...[kn] = value`` if ``opt[k0]...[kn-1]`` is a dict; return whether it was."""
    for key in keys[:-1]:
        opt = opt.get(key) if isinstance(opt, dict) else None
    if not isinstance(opt, dict):
        return False
    opt[keys[-1]] = value
    return True


def check_overrides(overrides):
    """Every --override must fit the shipped train or test options (a typo would do nothing)."""
    train = load_yaml(REPO / 'options' / 'train_DSMNet_Rain100L.yml')
    test = load_yaml(REPO / 'options' / 'test_DSMNet_Rain100L.yml')
    for keys, value in overrides:
        if not (_set(train, keys, value) | _set(test, keys, value)):
            raise InputError(f'--override {":".join(keys)}: no options file has {":".join(keys[:-1])}')


def make_options(exp, out, args, cuda):
    """Train and test options of ``exp``: the shipped ones with its data, network, batch and iterations.

    The iterations keep the paper's epochs for the pairs actually prepared (the shipped total_iter
    assumes the paper's count), times --scale; milestones and the validation and checkpoint
    frequencies follow, the log frequency follows --scale. --override comes next; the
    experiment's own network arguments last.
    """
    train = load_yaml(REPO / 'options' / f'train_DSMNet_{exp.dataset}.yml')
    test = load_yaml(REPO / 'options' / f'test_DSMNet_{exp.dataset}.yml')
    data = prepared_dir(out, exp.dataset)
    pairs = pair_count(out, exp.dataset, 'train') or PAPER_PAIRS[exp.dataset][0]
    factor = pairs / PAPER_PAIRS[exp.dataset][0] * args.scale

    train['name'] = test['name'] = exp.name
    train['num_gpu'] = test['num_gpu'] = 1 if cuda else 0  # one GPU per process (torchrun starts --gpus of them)
    for opt, phases in ((train, {'train': 'train', 'val': 'test'}), (test, {'test_1': 'test'})):
        for phase, split in phases.items():
            opt['datasets'][phase].update(dataroot_gt=str(data / split / 'target'),
                                          dataroot_lq=str(data / split / 'input'))
    train['datasets']['train']['batch_size_per_gpu'] = PAPER_BATCH // args.gpus
    if args.gpus > 1 and cuda:  # BatchNorm over the paper's 32 images, not each GPU's 32 / N (before --override)
        train['train']['sync_bn'] = True  # (PyTorch synchronises GPU tensors only: CPU processes keep their own)
    schedule = train['train']
    schedule['total_iter'] = _scaled(schedule['total_iter'], factor)
    schedule['scheduler']['milestones'] = [_scaled(m, factor) for m in schedule['scheduler']['milestones']]
    train['val']['val_freq'] = _scaled(train['val']['val_freq'], factor)  # every so many epochs, as shipped
    train['logger']['save_checkpoint_freq'] = _scaled(train['logger']['save_checkpoint_freq'], factor)
    train['logger']['print_freq'] = _scaled(train['logger']['print_freq'], args.scale)
    test['path']['pretrain_network_g'] = str(out / 'experiments' / exp.name / 'models' / 'net_g_latest.pth')

    for keys, value in args.override:
        _set(train, keys, value)
        _set(test, keys, value)
    train['network_g'].update(exp.variant)
    test['network_g'] = copy.deepcopy(train['network_g'])  # the test builds the network that was trained
    return train, test


def write_options(exp, out, source_rows):
    """Write the experiment's two options files under ``out/options``, with a header saying where they come from."""
    for phase, opt in (('train', exp.train_opt), ('test', exp.test_opt)):
        header = (f'# Generated by scripts/reproduce_paper.py from options/{phase}_DSMNet_{exp.dataset}.yml for '
                  f'{source_rows}.\n# Rewritten on every run: change --scale/--override instead of this file.\n')
        write_text(options_path(out, phase, exp.name), header + yaml.safe_dump(opt, sort_keys=False))


def fingerprint(train_opt, gpus):
    """What makes two trainings the same experiment: a run may only resume under the same settings.

    The GPU count is not part of it as long as the total batch and the batch each BatchNorm sees stay: with
    train:sync_bn, N GPUs train as one does. Without it on several GPUs, BatchNorm sees 32 / N images: recorded.
    """
    dataset = train_opt['datasets']['train']
    train = {k: v for k, v in train_opt['train'].items() if k != 'sync_bn'}
    record = {'network_g': train_opt['network_g'], 'train': train, 'gt_size': dataset['gt_size'],
              'total_batch': dataset['batch_size_per_gpu'] * gpus, 'dataroot_lq': dataset['dataroot_lq']}
    if gpus > 1 and not train_opt['train'].get('sync_bn'):
        record['batchnorm_batch'] = dataset['batch_size_per_gpu']
    return json.loads(json.dumps(record))


def _flatten(obj, prefix=''):
    if not isinstance(obj, dict):
        return {prefix: obj}
    flat = {}
    for key, value in obj.items():
        flat.update(_flatten(value, f'{prefix}:{key}' if prefix else key))
    return flat


def settings_change(old, new):
    """'train:total_iter 4 -> 1875, ...' for the first differences of two fingerprints."""
    a, b = _flatten(old), _flatten(new)
    changes = [f'{key} {a.get(key, "unset")} -> {b.get(key, "unset")}' for key in sorted(set(a) | set(b))
               if a.get(key) != b.get(key)]
    return ', '.join(changes[:3]) + (f' and {len(changes) - 3} more' if len(changes) > 3 else '')


# ---------------------------------------------------------------------------------------------
# State of an experiment on disk


def training_states(out, name):
    """Iterations of the saved training states of ``name``, ascending."""
    folder = out / 'experiments' / name / 'training_states'
    if not folder.is_dir():
        return []
    return sorted(int(p.stem) for p in folder.glob('*.state') if p.stem.isdigit())


def status(exp, out, gpus):
    """('done' | 'trained' | 'resume' | 'new' | 'changed', detail) of ``exp`` on disk."""
    saved = read_json(run_dir(out, exp.name) / 'settings.json')
    if saved is not None and saved != fingerprint(exp.train_opt, gpus):
        return 'changed', settings_change(saved, fingerprint(exp.train_opt, gpus))
    if (run_dir(out, exp.name) / 'metrics.json').is_file():
        return 'done', ''
    if (out / 'experiments' / exp.name / 'models' / 'net_g_latest.pth').is_file():
        return 'trained', ''
    states = training_states(out, exp.name)
    if states:
        return 'resume', states[-1]
    return 'new', ''


def describe(state, detail):
    return {
        'done': 'finished before: skipped',
        'trained': 'trained, test to run',
        'resume': f'resumes from iteration {detail}',
        'new': 'to run',
        'changed': f'ran before with other settings ({detail})',
    }[state]


# ---------------------------------------------------------------------------------------------
# Running


def train_command(opt_path, gpus):
    launcher = [sys.executable]
    if gpus > 1:
        launcher += ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={gpus}']
    return launcher + [str(TRAIN_ENTRY), '-opt', str(opt_path), '--auto_resume'] + (
        ['--launcher', 'pytorch'] if gpus > 1 else [])


def test_command(opt_path):
    return [sys.executable, str(TEST_ENTRY), '-opt', str(opt_path)]


def prepare_command(data, out, dataset):
    return [sys.executable, str(PREPARE_ENTRY), '--dataset', dataset, '--src', str(data / dataset), '--dst',
            str(prepared_dir(out, dataset))]


def run_logged(cmd, log_path, cwd, env=None):
    """Run ``cmd`` in ``cwd``, its output appended to ``log_path``; return its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, 'a') as log:
        log.write(f'\n# {time.strftime("%Y-%m-%d %H:%M:%S")} in {cwd}\n$ {shlex.join(cmd)}\n')
        log.flush()
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def failure(what, returncode, log_path):
    """'training exit 1: error: ... (log: path)': the failing step, its status and its last words."""
    lines = [line.strip() for line in log_path.read_text(errors='replace').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    last = (errors or lines or [''])[-1]
    how = f'killed by signal {-returncode}' if returncode < 0 else f'exit {returncode}'
    return f'{what} {how}: {last[:200]} (log: {log_path})'


def read_test_metrics(results_dir):
    """The last value of each metric in the newest BasicSR test log of ``results_dir`` (``# psnr_y: 38.1234``)."""
    logs = sorted(results_dir.glob('test_*.log'), key=lambda p: p.stat().st_mtime)
    if not logs:
        return {}
    return {key: float(value) for key, value in re.findall(r'# (\w+): (\S+)', logs[-1].read_text())}


class Runner:
    """Runs experiments one after the other, or --jobs at once on their own GPUs, and prints progress."""

    def __init__(self, args, out, cuda_ids):
        self.args, self.out = args, out
        self.lock = threading.Lock()
        self.failures = {}  # experiment or dataset name -> message
        self.slots = [cuda_ids[i * args.gpus:(i + 1) * args.gpus] for i in range(args.jobs)] if cuda_ids else []

    def say(self, message):
        with self.lock:
            print(message, flush=True)

    def env(self, slot):
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        if slot:
            env['CUDA_VISIBLE_DEVICES'] = ','.join(slot)
        return env

    def map(self, function, items):
        """``function(item, slot)`` for every item, --jobs at a time; each call has a GPU slot of its own."""
        free = list(self.slots) or [None] * self.args.jobs

        def call(item):
            with self.lock:
                slot = free.pop()
            try:
                return function(item, slot)
            finally:
                with self.lock:
                    free.append(slot)

        with ThreadPoolExecutor(self.args.jobs) as pool:
            futures = [pool.submit(call, item) for item in items]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def fail(self, name, tag, message):
        self.failures[name] = message
        self.say(f'FAILED {tag}: {message}')

    def prepare(self, dataset, slot):
        log = self.out / 'runs' / f'prepare_{dataset}.log'
        self.say(f'prepare {dataset} -> {prepared_dir(self.out, dataset)} (log: {log})')
        code = run_logged(prepare_command(Path(self.args.data).resolve(), self.out, dataset), log, self.out,
                          self.env(slot))
        if code:
            self.fail(dataset, dataset, failure('preparation', code, log))

    def experiment(self, exp, slot):
        """Train (or resume) and test ``exp`` unless finished; record its metrics in runs/<name>/metrics.json."""
        tag = f'{exp.name} (table{"s" if len(exp.tables) > 1 else ""} {", ".join(map(str, exp.tables))})'
        runs = run_dir(self.out, exp.name)
        if exp.dataset in self.failures:
            return self.fail(exp.name, tag, f'{exp.dataset} is not prepared')
        state, detail = status(exp, self.out, self.args.gpus)
        if state == 'changed':
            return self.fail(exp.name, tag, f'{describe(state, detail)}; use the same --scale/--override, another '
                             f'--out, or delete {self.out / "experiments" / exp.name} and {runs}')
        if state == 'done':
            return self.say(f'skip {tag}: {describe(state, detail)}')
        write_json(runs / 'settings.json', fingerprint(exp.train_opt, self.args.gpus))
        if state != 'trained':
            self.say(f'train {tag}: {exp.train_opt["train"]["total_iter"]:,} iterations'
                     + (f', from iteration {detail}' if state == 'resume' else '') + f' (log: {runs / "train.log"})')
            code = run_logged(train_command(options_path(self.out, 'train', exp.name), self.args.gpus),
                              runs / 'train.log', self.out, self.env(slot))
            if code:
                return self.fail(exp.name, tag, failure('training', code, runs / 'train.log'))
        self.say(f'test {tag} (log: {runs / "test.log"})')
        code = run_logged(test_command(options_path(self.out, 'test', exp.name)), runs / 'test.log', self.out,
                          self.env(slot[:1] if slot else slot))
        if code:
            return self.fail(exp.name, tag, failure('test', code, runs / 'test.log'))
        metrics = read_test_metrics(self.out / 'results' / exp.name)
        missing = [m for m in METRICS if m not in metrics]
        if missing:
            return self.fail(exp.name, tag, f'no {", ".join(missing)} in the test log of {exp.name}')
        write_json(runs / 'metrics.json', {'experiment': exp.name, 'dataset': exp.dataset,
                                           'network_g': exp.train_opt['network_g'],
                                           'total_iter': exp.train_opt['train']['total_iter'],
                                           'finished': time.strftime('%Y-%m-%d %H:%M:%S'), **metrics})
        self.say(f'done {tag}: PSNR/SSIM Y {metrics["psnr_y"]:.2f}/{metrics["ssim_y"]:.4f}, '
                 f'RGB {metrics["psnr_rgb"]:.2f}/{metrics["ssim_rgb"]:.4f}')


# ---------------------------------------------------------------------------------------------
# The rainy input's score


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


def render_tables(report):
    """tables.md from :func:`collect_tables`' dict."""
    settings = report['settings']
    lines = [
        '# DSM-Net (Li et al., CVPRW 2022): the paper\'s tables and ours', '',
        f'Written by `scripts/reproduce_paper.py` on {report["generated"]}; scale {settings["scale"]}, '
        f'{settings["gpus"]} GPU(s) per run, overrides: {", ".join(settings["overrides"]) or "none"}.', ''
    ]
    if settings['scale'] != 1 or settings['overrides']:
        lines += ['**Not the paper\'s settings** (--scale or --override): a smoke run, not comparable with the paper.',
                  '']
    lines += [
        'Columns: **paper** is PSNR (dB) / SSIM as printed in the paper. **ours Y** is ours on the Y channel '
        'of YCbCr (BasicSR\'s `calculate_psnr`/`calculate_ssim`, `test_y_channel: true`, no border crop), '
        'the mean over the test set; **ours RGB** the same on the three RGB channels; **ours Restormer Y** '
        'and **ours RCDNet Y** are Y as the field\'s two families of MATLAB scripts score it (Restormer\'s '
        '`evaluate_PSNR_SSIM.m`: Y rounded to 8 bits; RCDNet\'s `statistic.m`: the PSNR of ours Y, an SSIM that '
        'downsamples; docs/datasets.md). **... - paper** is ours minus the paper\'s figure (positive: ours is '
        'higher). **experiment** is the run behind the row: `experiments/`, `results/`, `runs/` and '
        '`options/*_<experiment>.yml` under the output folder. The paper does not say how it measured; the '
        'next section tells which of our columns to compare with it.', '',
        '## Which colour space and protocol did the paper measure?', '',
        'Its Table 2 "Rainy" row scores the rainy input itself, which no training changes: ours for the same '
        'test images, in each colour space and protocol.', '',
        _md_row(['test set', 'images', 'paper (Rainy)'] + _md_figure_headers()),
        _md_row(['---'] * 2 + ['---:'] * (1 + 2 * len(SPACES))),
    ]
    rainy = report['colour_space']['rainy_input']
    for dataset in DATASETS:
        if dataset in rainy:
            lines.append(_md_row([dataset, str(rainy[dataset]['images'])] + _md_figures(rainy[dataset])))
        else:
            lines.append(_md_row([dataset, '-', ' / '.join(PAPER_RAINY[dataset])] + ['-'] * (2 * len(SPACES))))
    lines += ['', report['colour_space']['verdict'], '']
    for table in report['tables'].values():
        if table.get('ours'):
            lines += ['## Not in the paper: Table 5 read as the links between the MABs', '',
                      'The paper\'s Table 5 names Across-Down, Across-Up and Dense-Fusion as "connection operations of '
                      'MAB" without saying where they act. The table above reads them as connections between the '
                      'MAB\'s kernel branches (our reading of eq. 5-10); this one reads them as the links between the '
                      'MABs of the network (level_down, level_up, level_dense), each MAB the full M5. The "paper" '
                      'column repeats its Table 5. The reading whose rows follow the paper\'s order (M1 lowest, M5 '
                      'highest, M3 above M4 above M2) is the more plausible one; docs/reproduce.md says how to read '
                      'the two.', '']
        lines += [f'## {table["title"]}', '',
                  _md_row(['row', 'paper'] + _md_figure_headers() + ['experiment', 'status']),
                  _md_row(['---'] + ['---:'] * (1 + 2 * len(SPACES)) + ['---'] * 2)]
        for entry in table['rows']:
            state = entry['status'].replace('|', '\\|')  # a log line may hold one
            lines.append(_md_row([entry['label']] + _md_figures(entry) + [f'`{entry["experiment"]}`', state]))
        lines.append('')
    return '\n'.join(lines)


def write_tables(out, failures, settings):
    report = collect_tables(out, failures, settings)
    write_json(out / 'tables.json', report)
    write_text(out / 'tables.md', render_tables(report))


# ---------------------------------------------------------------------------------------------
# --dry-run: plan and timed estimate


def duration(seconds):
    """'3 d 4 h', '5 h 12 min', '4 min 10 s', '12 s'."""
    seconds = round(seconds)
    parts = [(seconds // 86400, 'd'), (seconds % 86400 // 3600, 'h'), (seconds % 3600 // 60, 'min'),
             (seconds % 60, 's')]
    first = next((i for i, (value, _) in enumerate(parts) if value), 3)
    return ' '.join(f'{value} {unit}' for value, unit in parts[first:first + 2] if value) or '0 s'


def time_network(train_opt, iters, device):
    """Seconds per training step (random batch of the options' size) and per 321x481 test image, on ``device``."""
    import torch

    from dsmnet_arch.models.derain_model import AMP_DTYPES, amp_mode

    from basicsr.archs import build_network
    from basicsr.losses import build_loss

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    net = build_network(copy.deepcopy(train_opt['network_g'])).to(device)
    loss_fn = build_loss(copy.deepcopy(train_opt['train']['pixel_opt'])).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = train_opt['datasets']['train']
    lq, gt = torch.rand(2, data['batch_size_per_gpu'], 3, data['gt_size'], data['gt_size'], device=device)

    amp = amp_mode(train_opt['train'], device)  # train:amp, or its older spelling bf16: true, as DerainModel reads it

    def autocast():
        return torch.autocast(device.type, AMP_DTYPES.get(amp), enabled=amp is not None)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(net(lq), gt)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocations, cuDNN's algorithm search
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    per_iter = (time.perf_counter() - start) / iters
    net.eval()
    image = torch.rand(1, 3, *ESTIMATE_IMAGE, device=device)
    with torch.no_grad(), autocast():
        net(image)
        sync()
        start = time.perf_counter()
        net(image)
        sync()
    return per_iter, time.perf_counter() - start


def time_metrics():
    """Seconds to score one 321x481 image in the metrics of METRICS (BasicSR computes them on the CPU)."""
    import numpy as np

    import dsmnet_arch  # noqa: F401
    from dsmnet_arch.metrics.protocol_metrics import PROTOCOLS

    from basicsr.metrics import calculate_metric, calculate_psnr, calculate_ssim

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, *ESTIMATE_IMAGE, 3), dtype=np.uint8)
    start = time.perf_counter()
    for y_channel in (True, False):
        calculate_psnr(a, b, crop_border=0, test_y_channel=y_channel)
        calculate_ssim(a, b, crop_border=0, test_y_channel=y_channel)
    for protocol in ('restormer', 'rcdnet'):
        for opt in PROTOCOLS[protocol].values():
            calculate_metric({'img': a, 'img2': b}, opt)
    return time.perf_counter() - start


def estimate(exp, out, args, timing, score_s):
    """Estimated seconds left for ``exp``: (training, validation + test, state, detail)."""
    state, detail = status(exp, out, args.gpus)
    if state == 'done':
        return 0., 0., state, detail
    total = exp.train_opt['train']['total_iter']
    done = total if state == 'trained' else detail if state == 'resume' else 0
    per_iter, per_image = timing
    images = pair_count(out, exp.dataset, 'test') or PAPER_PAIRS[exp.dataset][1]
    val_freq = exp.train_opt['val']['val_freq']
    passes = 1 + (total // val_freq - done // val_freq + 1 if state != 'trained' else 0)  # test + validations
    return (total - done) * per_iter, passes * images * (per_image + score_s), state, detail


def makespan(durations, jobs):
    """Wall time of running ``durations`` in order on ``jobs`` workers, each taking the next when free."""
    workers = [0.] * jobs
    for seconds in durations:
        workers[workers.index(min(workers))] += seconds
    return max(workers)


def speed_key(exp):
    """What sets the speed of ``exp``'s training step: experiments with the same key are timed once."""
    data = exp.train_opt['datasets']['train']
    return json.dumps([exp.train_opt['network_g'], data['batch_size_per_gpu'], data['gt_size'],
                       exp.train_opt['train'].get('amp'), exp.train_opt['train'].get('bf16')], sort_keys=True)


def dry_run(experiments, out, args, cuda_ids):
    """Print every step with its command and iterations, and the total; with --time-estimate, time every network
    here first and add the estimate. Without it nothing is built or timed: the plan prints at once."""
    downloads = Path(args.data).resolve()
    print(f'Dry run: nothing is prepared, trained or tested; options files written to {out / "options"}.')
    print(f'Run from {out}; {len(experiments)} experiments for table(s) '
          f'{", ".join(map(str, sorted({t for exp in experiments for t in exp.tables}, key=str)))}, '
          f'{args.gpus} GPU(s) per training' + (' (BatchNorm synchronised: train:sync_bn)' if args.gpus > 1 and cuda_ids
                                                else ' (processes on the CPU: BatchNorm over each one\'s '
                                                f'{PAPER_BATCH // args.gpus} images)' if args.gpus > 1 else '')
          + f', {args.jobs} at a time.')
    for dataset in sorted({exp.dataset for exp in experiments}, key=DATASETS.index):
        if not is_prepared(out, dataset):
            print(f'prepare {dataset}: {shlex.join(prepare_command(downloads, out, dataset))}')
    timings, score_s, where = {}, 0., None
    if args.time_estimate:
        import torch

        from dsmnet_arch.utils import keep_freed_memory

        keep_freed_memory()  # as the training and test programs do: on a CPU it changes the step time a lot
        device = torch.device('cuda' if cuda_ids else 'cpu')
        where = torch.cuda.get_device_name(0) if cuda_ids else f'the CPU (torch threads: {torch.get_num_threads()})'
        print(f'Timing on {where}: {args.estimate_iters} training iteration(s) per network after one warm-up, '
              f'batch {PAPER_BATCH // args.gpus} per GPU, and one {ESTIMATE_IMAGE[0]}x{ESTIMATE_IMAGE[1]} test '
              'image; data loading is not included.', flush=True)
        score_s = time_metrics()
    print()
    remaining = []
    for number, exp in enumerate(experiments, 1):
        key = speed_key(exp)
        if args.time_estimate and key not in timings:
            timings[key] = time_network(exp.train_opt, args.estimate_iters, device)
        state, detail = status(exp, out, args.gpus)
        pairs = pair_count(out, exp.dataset, 'train')
        pairs_note = f'{pairs} pairs' if pairs else f'the paper\'s {PAPER_PAIRS[exp.dataset][0]} pairs until prepared'
        print(f'{number:2d}. {exp.name}  tables {", ".join(map(str, exp.tables))}  {exp.dataset}  '
              f'{exp.train_opt["train"]["total_iter"]:,} iterations ({pairs_note})  {describe(state, detail)}')
        if args.time_estimate:
            train_s, eval_s, state, detail = estimate(exp, out, args, timings[key], score_s)
            remaining.append(train_s + eval_s)
            print(f'    estimate: {timings[key][0]:.3f} s/iteration -> training {duration(train_s)}, '
                  f'validation and test {duration(eval_s)}')
        print(f'    train: {shlex.join(train_command(options_path(out, "train", exp.name), args.gpus))}')
        print(f'    test:  {shlex.join(test_command(options_path(out, "test", exp.name)))}', flush=True)
    total = f'\nTotal: {sum(e.train_opt["train"]["total_iter"] for e in experiments):,} iterations'
    if not args.time_estimate:
        print(f'{total}. Not timed: add --time-estimate to time each of the {len({speed_key(e) for e in experiments})} '
              'networks here for an estimate.')
        return
    print(f'{total}; estimated {duration(sum(remaining))} of work left' + (
        f', {duration(makespan(remaining, args.jobs))} with {args.jobs} at a time' if args.jobs > 1 else '') +
          f' on {where}.')


# ---------------------------------------------------------------------------------------------


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


def run(experiments, out, args, cuda_ids):
    """Prepare, write the options, then dry-run or run every experiment and write the tables; the exit status."""
    runner = Runner(args, out, cuda_ids)
    if not cuda_ids:
        print('No GPU visible: everything runs on the CPU.', flush=True)
    if not args.dry_run:
        needed = {exp.dataset for exp in experiments}
        runner.map(runner.prepare, [d for d in DATASETS if d in needed and not is_prepared(out, d)])
    for exp in experiments:
        exp.train_opt, exp.test_opt = make_options(exp, out, args, bool(cuda_ids))
        rows = [f'{"our network-level reading of table 5" if t in OUR_TABLES else f"table {t}"} row {r.label}'
                for t in exp.tables for r in ALL_TABLES[t][1] if row_experiment(r) == exp.name]
        write_options(exp, out, ', '.join(rows))
    # One at a time: shortest first, so the tables fill early. Several at once: longest first, the
    # shortest wall time (Rain1400 alone is more than half of all iterations).
    experiments.sort(key=lambda exp: exp.train_opt['train']['total_iter'], reverse=args.jobs > 1)
    if args.dry_run:
        dry_run(experiments, out, args, cuda_ids)
        return 0

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
