"""Checkpoint files: reading untrusted ones, finding the weights in them, writing them safely.

One home for what ``DerainModel``'s loading and saving, the resume (:mod:`dsmnet_arch.compat`) and
the loading of trained networks (:mod:`dsmnet_arch.loading`: the inference command, the export) do
with ``.pth`` and ``.state`` files.

A network checkpoint written by this package is BasicSR's ``{'params': state_dict}`` (and
``params_ema``) plus ``'arch'``: the network's type and every constructor argument, so that the
weights of DSM-Net's variants, which have the same keys and shapes, still say which network they
are. Plain BasicSR loads these files as before: it reads only the ``param_key`` it is given.
"""
import inspect
import os

import torch

from dsmnet_arch.utils import atomic_write

#: Key of the network's type and constructor arguments in a checkpoint, beside ``params``.
ARCH_KEY = 'arch'


def load_checkpoint(path, map_location='cpu'):
    """``torch.load`` for checkpoints and training states that users hand us (untrusted).

    Loads with ``weights_only=True``, so a file that would unpickle code is refused. Any failure
    is re-raised as a one-line ``ValueError`` that names the file instead of a pickle traceback.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated, foreign, or pickled code: all are refused the same way
        reason = str(err).strip().splitlines()[0].split('. ')[0] if str(err).strip() else type(err).__name__
        raise ValueError(f'Cannot load checkpoint {path}: not a readable PyTorch checkpoint '
                         f'of tensors ({type(err).__name__}: {reason})') from None


def state_dict_from_checkpoint(checkpoint, path, param_key='params'):
    """The network weights inside a loaded checkpoint, and the key they were found under.

    Takes BasicSR's ``{param_key: state_dict}`` files (falling back from ``params_ema`` to
    ``params`` as BasicSR does) and bare state dicts, and drops the ``module.`` prefix of weights
    saved from a (Distributed)DataParallel wrapper. Anything else is a ``ValueError`` naming ``path``.
    """
    state_dict = checkpoint
    if isinstance(checkpoint, dict) and param_key is not None:
        if param_key not in checkpoint and 'params' in checkpoint:
            param_key = 'params'  # BasicSR's fallback: params_ema asked for, only params saved
        state_dict = checkpoint.get(param_key, checkpoint)
    if not isinstance(state_dict, dict) or not state_dict or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise ValueError(f'Cannot use {path}: expected a state dict of tensors, bare or under the key '
                         f'"{param_key}" (BasicSR\'s net_g_*.pth)')
    return {k.removeprefix('module.'): v for k, v in state_dict.items()}, param_key


def arch_record(network_opt, arch_class):
    """The ``arch`` entry for a checkpoint: ``{'type': ..., **arguments}`` of a network built from
    ``network_opt`` (an options file's ``network_g``) by ``arch_class``, every argument the
    constructor takes filled in with its default, as plain Python values."""
    record = {k: p.default for k, p in inspect.signature(arch_class).parameters.items()
              if p.default is not inspect.Parameter.empty}
    record.update((k, v) for k, v in network_opt.items() if k != 'type')
    record = {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}
    return {'type': network_opt.get('type', arch_class.__name__), **record}


def arch_from_checkpoint(checkpoint, path):
    """The network's type and arguments recorded in a loaded checkpoint (``(type, args)``), or
    ``None`` for checkpoints without a record (BasicSR's own, older ones, bare state dicts)."""
    if not isinstance(checkpoint, dict) or ARCH_KEY not in checkpoint:
        return None
    record = checkpoint[ARCH_KEY]
    if not isinstance(record, dict) or not isinstance(record.get('type'), str) or not all(
            isinstance(k, str) for k in record):
        raise ValueError(f'Cannot use {path}: its "{ARCH_KEY}" entry is not a network type with arguments')
    args = dict(record)
    return args.pop('type'), args


def arch_mismatch(checkpoint, path, network_opt, arch_class):
    """How the network that ``network_opt`` builds with ``arch_class`` differs from the one the
    checkpoint's record names: ``'argument=ours vs recorded'`` strings, none when the checkpoint
    has no record or names another type (the weights' shapes then decide, as in BasicSR)."""
    recorded = arch_from_checkpoint(checkpoint, path)
    if recorded is None or not network_opt or recorded[0] != network_opt.get('type'):
        return []
    ours = arch_record(network_opt, arch_class)
    # an argument the record lacks (an older checkpoint) was its default then
    theirs = {**arch_record({}, arch_class), **recorded[1]}
    return [f'{k}={ours.get(k)!r} vs {theirs.get(k)!r}' for k in {**ours, **theirs} if ours.get(k) != theirs.get(k)]


def atomic_save(obj, path):
    """``torch.save`` that leaves the previous file (or none), never a truncated one, when killed
    on the way (:func:`dsmnet_arch.utils.atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def bundle_weights(src, dst, options_path):
    """Write the network of the training checkpoint ``src`` (``params_ema`` preferred) to ``dst`` as the package
    ships weights: ``params``, the ``arch`` record and, under ``options``, the text of the training options file
    ``options_path``, so that the file says how it was made. ``src`` must record its network (written here)."""
    checkpoint = load_checkpoint(src)
    state, _ = state_dict_from_checkpoint(checkpoint, src, 'params_ema')
    if arch_from_checkpoint(checkpoint, src) is None:
        raise ValueError(f'{src} records no network arguments ("{ARCH_KEY}"): not a checkpoint of this package')
    with open(options_path, encoding='utf-8') as f:
        options = f.read()
    atomic_save({'params': state, ARCH_KEY: checkpoint[ARCH_KEY], 'options': options}, dst)
