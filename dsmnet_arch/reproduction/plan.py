"""The experiments the chosen tables need, and their options files: the shipped ones with each experiment's data,
network, batch and iterations."""
import copy
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dsmnet_arch.reproduction.layout import options_path, pair_count, prepared_dir, write_text
from dsmnet_arch.reproduction.paper import ALL_TABLES, DEFAULT_VARIANT, LEVEL_KEYS, PAPER_BATCH, PAPER_PAIRS, TABLE5

REPO = Path(__file__).resolve().parents[2]


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


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


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

