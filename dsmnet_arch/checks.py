"""Checks an options file before BasicSR builds anything, and turns bad input into one-line errors.

BasicSR 1.4.2 finds most mistakes late (an AssertionError in a dataloader worker, a KeyError from
a registry) or never (a misspelled key is silently ignored). :func:`run_pipeline` wraps BasicSR's
train/test pipelines: right after the options are parsed, :func:`check_options` verifies the
registered types, the network arguments, likely misspellings of known keys and every paired
dataset (folders, the pairs that BasicSR's own ``paired_paths_from_*`` functions make, readable
images, equal sizes, ``gt_size``, LMDB meta info) and single-image dataset (a folder of readable
images); any user error, then or later, ends the run with ``error: ...`` on one line and exit
status 1.
"""
import difflib
import inspect
import logging
import os
import sys

from PIL import Image

from dsmnet_arch.utils import IMAGE_EXTENSIONS, keep_freed_memory

from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.utils.registry import MODEL_REGISTRY

# Keys BasicSR's SRModel (and so DerainModel), its trainer and PairedImageDataset read; the train keys a
# model reads besides SRModel's come from the model class itself (DerainModel.TRAIN_OPTIONS). A key not
# listed here that is a near-miss of one that is ("total_iters", "pixle_opt") is an error; other unknown
# keys may belong to a user's own extension and only give a warning.
KNOWN_KEYS = {
    '': ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train', 'val',
         'logger', 'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume',
         'root_path'),
    'train': ('ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt', 'perceptual_opt'),
    'val': ('val_freq', 'save_img', 'suffix', 'metrics', 'pbar'),
    'logger': ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'),
    'path': ('pretrain_network_g', 'param_key_g', 'strict_load_g', 'resume_state', 'ignore_resume_networks',
             'experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root'),
    'dataset': ('name', 'type', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl', 'io_backend',
                'gt_size', 'use_hflip', 'use_rot', 'use_shuffle', 'num_worker_per_gpu', 'batch_size_per_gpu',
                'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue',
                'mean', 'std', 'color', 'phase', 'scale'),
}
CHECKED_MODELS = ('SRModel', 'DerainModel', 'RealRainModel')
CHECKED_DATASETS = ('PairedImageDataset', 'SingleImageDataset')
USER_ERRORS = (ValueError, OSError, FloatingPointError)


class OptionsError(ValueError):
    """A problem with the options or the data they point to; the message names the key or file."""


def _near_miss(key, known):
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return match[0] if match else None


def _check_keys(section, where, known, warnings):
    for key in section:
        if key in known:
            continue
        guess = _near_miss(key, known)
        if guess:
            raise OptionsError(f'Option {where}{key} is not read by BasicSR; did you mean {where}{guess}?')
        warnings.append(f'option {where}{key} is not read by {CHECKED_MODELS} (ignored unless your extension reads it)')


def _get_registered(registry, kind, name, key):
    if name is None:
        raise OptionsError(f'Option {key} is missing')
    try:
        return registry.get(name)
    except KeyError:
        guess = _near_miss(name, [n for n, _ in registry])
        hint = f'; did you mean {guess}?' if guess else ''
        raise OptionsError(f'Option {key}: {name!r} is not a registered {kind}{hint}') from None


def _check_arguments(cls, args, key):
    """Every key of ``args`` must be an argument of ``cls`` (unless it takes **kwargs)."""
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for name in args:
        if name not in params:
            guess = _near_miss(name, list(params))
            hint = f'; did you mean {key}:{guess}?' if guess else f'; {cls.__name__} takes {", ".join(params)}'
            raise OptionsError(f'Option {key}:{name} is not an argument of {cls.__name__}{hint}')


def _check_types(opt):
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    _get_registered(MODEL_REGISTRY, 'model', opt.get('model_type'), 'model_type')
    for net_key in (k for k in opt if k.startswith('network_')):
        net_opt = dict(opt[net_key] or {})
        arch = _get_registered(ARCH_REGISTRY, 'architecture', net_opt.pop('type', None), f'{net_key}:type')
        _check_arguments(arch, net_opt, net_key)
        try:  # a network is cheap to build; its own checks then fail before any folder is made
            arch(**net_opt)
        except ValueError as err:
            raise OptionsError(f'Option {net_key}: {err}') from None
    for loss_key, loss_opt in (opt.get('train') or {}).items():
        if loss_key.endswith('_opt') and isinstance(loss_opt, dict):
            loss_opt = dict(loss_opt)
            loss = _get_registered(LOSS_REGISTRY, 'loss', loss_opt.pop('type', None), f'train:{loss_key}:type')
            _check_arguments(loss, loss_opt, f'train:{loss_key}')
    for metric_key, metric_opt in ((opt.get('val') or {}).get('metrics') or {}).items():
        _get_registered(METRIC_REGISTRY, 'metric', metric_opt.get('type'), f'val:metrics:{metric_key}:type')
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        _get_registered(DATASET_REGISTRY, 'dataset', dataset_opt.get('type'), f'datasets:{phase}:type')


def _image_size(path, key):
    """(width, height) read from the file's header; OptionsError naming the file if it is no image."""
    if os.path.getsize(path) == 0:
        raise OptionsError(f'Option {key}: Empty image file: {path}')
    try:
        with Image.open(path) as img:
            size = img.size
            img.verify()
    except Exception as err:
        raise OptionsError(f'Option {key}: Unreadable image file: {path} ({type(err).__name__}: {err})') from None
    return size


def _folder_images(folder, key):
    if not folder:
        raise OptionsError(f'Option {key} is missing')
    if not os.path.isdir(folder):
        raise OptionsError(f'Option {key}: folder {folder} does not exist')
    names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    for name in names:
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            raise OptionsError(f'Option {key}: {os.path.join(folder, name)} is not an image file '
                               f'(allowed: {", ".join(IMAGE_EXTENSIONS)}); move it out of the dataset folder')
    if not names:
        raise OptionsError(f'Option {key}: folder {folder} holds no images')
    return names


def _lmdb_meta(folder, key):
    """{LMDB key: (image name, (width, height))} from a BasicSR LMDB folder's meta_info.txt.

    The key of a line is what BasicSR's ``paired_paths_from_lmdb`` takes from it: the text before its first dot.
    """
    if not folder or not os.path.isdir(folder):
        raise OptionsError(f'Option {key}: LMDB folder {folder} does not exist')
    meta_path = os.path.join(folder, 'meta_info.txt')
    if not os.path.isfile(meta_path):
        raise OptionsError(f'Option {key}: {meta_path} is missing (BasicSR reads the keys of an LMDB from it; '
                           'build LMDBs with scripts/prepare_rain_datasets.py --lmdb)')
    meta = {}
    with open(meta_path) as f:
        for line_no, line in enumerate(f, 1):
            try:
                name, shape = line.split(' (', 1)
                h, w = (int(v) for v in shape.split(')')[0].split(',')[:2])
            except ValueError:
                raise OptionsError(f'{meta_path}:{line_no}: expected "name (h,w,c) level", '
                                   f'got {line.strip()!r}') from None
            meta[line.split('.')[0]] = (name, (w, h))
    if not meta:
        raise OptionsError(f'{meta_path} lists no images')
    return meta


def _paired_paths(dataset_opt, lmdb):
    """[(input, target)] as BasicSR's PairedImageDataset pairs them for these options, by its own functions:
    LMDB keys, or file paths from the folders (or from meta_info_file) and filename_tmpl; sorted by target."""
    folders, keys = [dataset_opt.get('dataroot_lq'), dataset_opt.get('dataroot_gt')], ['lq', 'gt']
    tmpl = dataset_opt.get('filename_tmpl', '{}')
    if lmdb:
        paths = paired_paths_from_lmdb(folders, keys)
    elif dataset_opt.get('meta_info_file') is not None:
        paths = paired_paths_from_meta_info_file(folders, keys, dataset_opt['meta_info_file'], tmpl)
    else:
        paths = paired_paths_from_folder(folders, keys, tmpl)
    return sorted(((p['lq_path'], p['gt_path']) for p in paths), key=lambda pair: pair[1])


def _no_input(key, tmpl, count, lq_path, gt_path):
    """The error for ``count`` targets without their input; names the first, ``gt_path``, and its ``lq_path``."""
    return OptionsError(f'Option {key}: {count} target(s) have no input (filename_tmpl {tmpl!r}), '
                        f'e.g. {gt_path} has no {lq_path}')


def _unpaired(key, dataset_opt, lq_of, lq_names, err):
    """The error for folders BasicSR could not pair, naming a file where its message does not.

    ``lq_of`` maps each target name to the input name it needs and ``lq_names`` holds the input names.
    Names the first target without its input, else the first input no target takes, else repeats
    BasicSR's ``err``.
    """
    lq_root, gt_root = dataset_opt.get('dataroot_lq'), dataset_opt.get('dataroot_gt')
    missing = sorted(g for g, q in lq_of.items() if q not in lq_names)
    if missing:
        return _no_input(key, dataset_opt.get('filename_tmpl', '{}'), len(missing),
                         os.path.join(lq_root, lq_of[missing[0]]), os.path.join(gt_root, missing[0]))
    unused = sorted(lq_names - set(lq_of.values()))
    if unused:
        return OptionsError(f'Option {key}: {len(unused)} input(s) have no target in {gt_root}, '
                            f'e.g. {os.path.join(lq_root, unused[0])}')
    return OptionsError(f'Option {key}: {lq_root} and {gt_root} do not pair: {err}')


def _folder_pairs(dataset_opt, key):
    """((input path, size), (target path, size)) of each pair of image files, paired as BasicSR pairs them."""
    lq_names = set(_folder_images(dataset_opt.get('dataroot_lq'), f'{key}:dataroot_lq'))
    gt_names = _folder_images(dataset_opt.get('dataroot_gt'), f'{key}:dataroot_gt')
    meta_file = dataset_opt.get('meta_info_file')
    if meta_file is not None and not os.path.isfile(meta_file):
        raise OptionsError(f'Option {key}:meta_info_file: {meta_file} does not exist')
    tmpl = dataset_opt.get('filename_tmpl', '{}')
    try:
        pairs = _paired_paths(dataset_opt, lmdb=False)
    except AssertionError as err:  # BasicSR asserts equal counts, then the input of each target
        # the input name BasicSR looked for, only to name a file in the error
        lq_of = {g: tmpl.format(os.path.splitext(g)[0]) + os.path.splitext(g)[1] for g in gt_names}
        raise _unpaired(key, dataset_opt, lq_of, lq_names, err) from None
    missing = [(q, g) for q, g in pairs if not os.path.isfile(q)]  # BasicSR takes meta_info_file's names on trust
    if missing:
        raise _no_input(key, tmpl, len(missing), *missing[0])
    for q, g in pairs:
        yield (q, _image_size(q, f'{key}:dataroot_lq')), (g, _image_size(g, f'{key}:dataroot_gt'))


def _lmdb_pairs(dataset_opt, key):
    """((input, size), (target, size)) of each pair of LMDB images, paired as BasicSR pairs them (by key)."""
    lq_root, gt_root = dataset_opt.get('dataroot_lq'), dataset_opt.get('dataroot_gt')
    lq, gt = _lmdb_meta(lq_root, f'{key}:dataroot_lq'), _lmdb_meta(gt_root, f'{key}:dataroot_gt')
    try:
        pairs = _paired_paths(dataset_opt, lmdb=True)
    except ValueError as err:  # the keys differ, or a folder's name does not end in .lmdb
        lq_of = {name: lq[k][0] if k in lq else name for k, (name, _) in gt.items()}
        raise _unpaired(key, dataset_opt, lq_of, {name for name, _ in lq.values()}, err) from None
    for q, g in pairs:
        (lq_name, lq_size), (gt_name, gt_size) = lq[q], gt[g]
        yield (os.path.join(lq_root, lq_name), lq_size), (os.path.join(gt_root, gt_name), gt_size)


def _pair_sizes(dataset_opt, phase, scale):
    """{target name: ((lq w, h), (gt w, h))} of the pairs BasicSR's PairedImageDataset makes of these options."""
    key = f'datasets:{phase}'
    lmdb = (dataset_opt.get('io_backend') or {}).get('type') == 'lmdb'
    sizes = {}
    for (lq_path, lq_size), (gt_path, gt_size) in (_lmdb_pairs if lmdb else _folder_pairs)(dataset_opt, key):
        if (lq_size[0] * scale, lq_size[1] * scale) != gt_size:
            raise OptionsError(f'Option {key}: pair sizes differ: input {lq_path} is '
                               f'{lq_size[0]}x{lq_size[1]}, target {gt_path} is '
                               f'{gt_size[0]}x{gt_size[1]} (scale {scale})')
        sizes[os.path.relpath(gt_path, dataset_opt['dataroot_gt'])] = (lq_size, gt_size)
    return sizes


def _check_single_images(dataset_opt, key):
    """The input images of a SingleImageDataset: an LMDB with its meta info, or a folder of readable images."""
    folder = dataset_opt.get('dataroot_lq')
    if (dataset_opt.get('io_backend') or {}).get('type') == 'lmdb':
        _lmdb_meta(folder, key)
        return
    for name in _folder_images(folder, key):
        _image_size(os.path.join(folder, name), key)


def _check_datasets(opt, warnings):
    datasets = opt.get('datasets')
    if not datasets:
        raise OptionsError('Option datasets is missing or empty')
    for phase, dataset_opt in datasets.items():
        if dataset_opt.get('type') not in CHECKED_DATASETS:
            continue
        if opt.get('model_type') in CHECKED_MODELS:
            _check_keys(dataset_opt, f'datasets:{phase}:', KNOWN_KEYS['dataset'], warnings)
        if dataset_opt['type'] == 'SingleImageDataset':
            _check_single_images(dataset_opt, f'datasets:{phase}:dataroot_lq')
            continue
        sizes = _pair_sizes(dataset_opt, phase, opt.get('scale', 1))
        gt_size = dataset_opt.get('gt_size')
        if phase.split('_')[0] == 'train' and gt_size:
            name, (_, (w, h)) = min(sizes.items(), key=lambda item: min(item[1][1]))
            if gt_size > min(w, h):
                raise OptionsError(f'Option datasets:{phase}:gt_size is {gt_size}, larger than target {name} '
                                   f'({w}x{h}); lower gt_size or remove images smaller than it')


def _check_weights(opt):
    """Pretrained weights are loaded after BasicSR made the experiment folders: check them first."""
    from dsmnet_arch.checkpoint import load_checkpoint, state_dict_from_checkpoint

    paths = opt.get('path') or {}
    for key, path in paths.items():
        if key.startswith('pretrain_network_') and path:
            param_key = paths.get(key.replace('pretrain_network_', 'param_key_'), 'params')
            state_dict_from_checkpoint(load_checkpoint(path), path, param_key)


def check_options(opt):
    """Check a parsed options dict; return warnings, raise :class:`OptionsError` on errors."""
    warnings = []
    if opt.get('model_type') in CHECKED_MODELS:
        _check_keys(opt, '', KNOWN_KEYS[''], warnings)
        for section in ('train', 'val', 'logger', 'path'):
            if isinstance(opt.get(section), dict):
                known = KNOWN_KEYS[section]
                if section == 'train':  # DerainModel's (and RealRainModel's) own, read off the class
                    known += getattr(MODEL_REGISTRY.get(opt['model_type']), 'TRAIN_OPTIONS', ())
                _check_keys(opt[section], f'{section}:', known, warnings)
    _check_types(opt)
    _check_datasets(opt, warnings)
    _check_weights(opt)
    return warnings


def _checked(parse_options):
    """BasicSR's ``parse_options``, followed by :func:`check_options` on its result."""

    def parse_and_check(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        for warning in check_options(opt):
            print(f'warning: {warning}', file=sys.stderr)
        return opt, args

    return parse_and_check


def run_pipeline(module):
    """Run ``basicsr.train.train_pipeline`` or ``basicsr.test.test_pipeline`` in the current directory.

    ``module`` is ``basicsr.train`` or ``basicsr.test``. User errors end the process with one line
    on stderr and exit status 1; the traceback still goes to the run's log file, if one was opened.
    Freed memory is kept for reuse (:func:`dsmnet_arch.utils.keep_freed_memory`).

    The options are checked by replacing ``module.parse_options`` while the pipeline runs (restored
    afterwards): BasicSR's pipeline functions parse the options and build everything in one body, so
    the name it looks up is the only place between the two; copying the pipeline would fork BasicSR's.
    """
    keep_freed_memory()
    parse_options = module.parse_options
    module.parse_options = _checked(parse_options)
    pipeline = module.train_pipeline if hasattr(module, 'train_pipeline') else module.test_pipeline
    try:
        pipeline(os.getcwd())
    except USER_ERRORS as err:
        for handler in logging.getLogger('basicsr').handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(logging.LogRecord('basicsr', logging.ERROR, __file__, 0, 'Run stopped: %s', (err, ),
                                                 sys.exc_info()))
        message = ' '.join(str(err).split()) or type(err).__name__
        print(f'error: {message}', file=sys.stderr)
        sys.exit(1)
    finally:
        module.parse_options = parse_options
