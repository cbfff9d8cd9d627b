"""Files under ``--out``: where each data set, options file and run goes, JSON and text written atomically, and the
state of an experiment on disk (finished, trained, resumable, new, or run before with other settings)."""
import json
import os

from dsmnet_arch.utils import atomic_write


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
    """Write ``text`` to ``path`` (its folder created) through :func:`~dsmnet_arch.utils.atomic_write`, so a reader
    never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + '\n')


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

