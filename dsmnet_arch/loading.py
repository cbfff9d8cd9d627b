"""Trained DSM-Net weights -> a ready DSMNet, for everything that runs a trained network outside BasicSR.

The inference command and its web page and videos (:mod:`dsmnet_arch.infer`), the ONNX export
(:mod:`dsmnet_arch.export`) and the benchmarks build their network with :func:`build_model`. The
checkpoint files themselves (reading untrusted ones, where the weights are, the recorded
arguments) are :mod:`dsmnet_arch.checkpoint`'s; a BasicSR training loads its weights through
``DerainModel.load_network`` instead.
"""
import inspect
import os
import sys

import numpy as np
import yaml

from dsmnet_arch.archs.dsmnet_arch import DSMNet, args_from_state_dict
from dsmnet_arch.checkpoint import arch_from_checkpoint, load_checkpoint, state_dict_from_checkpoint

from basicsr.utils.options import ordered_yaml

#: The weights that come with the package (dsmnet_arch/weights/README.md is their card).
BUNDLED_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights', 'dsmnet_synthetic_rain.pth')
#: What they are, in a few words, for the line that says they are used.
BUNDLED_NOTE = ('dsmnet_arch/weights/dsmnet_synthetic_rain.pth: trained on a CPU on synthetic rain over photographs, '
                'not the paper\'s weights, not real rain; card: dsmnet_arch/weights/README.md')


def default_weights():
    """The weights used when ``--weights`` is not given: the bundled ones (:data:`BUNDLED_WEIGHTS`), or ``None``
    where they are missing (a checkout without them)."""
    return BUNDLED_WEIGHTS if os.path.isfile(BUNDLED_WEIGHTS) else None


def weights_or_bundled(weights, program='dsmnet-derain'):
    """``weights`` if given, else the bundled ones, ``program`` saying so once on stderr; a ``ValueError`` when
    neither is there."""
    if weights:
        return weights
    if default_weights() is None:
        raise ValueError('--weights is required: this installation has no bundled weights')
    print(f'{program}: no --weights given: using the bundled ones ({BUNDLED_NOTE})', file=sys.stderr)
    return BUNDLED_WEIGHTS


def read_network_opt(path):
    """DSMNet arguments from the ``network_g`` section of a BasicSR training options file."""
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f'Cannot read options file {path}: {str(err).splitlines()[0]}') from None
    net = dict(opt.get('network_g') or {}) if isinstance(opt, dict) else {}
    if net.get('type') != 'DSMNet':
        raise ValueError(f'{path}: network_g must be a section with "type: DSMNet", got type {net.get("type")!r}')
    net.pop('type')
    return net


def build_model(weights, opt=None):
    """DSMNet with the weights of ``weights`` (``params_ema`` preferred over ``params``), in eval
    mode on the CPU. Its arguments come from ``opt`` (an options file) if given, else from the
    arguments the checkpoint records, else they are read off the weights (checkpoints of BasicSR
    and of earlier versions, bare state dicts). Mismatches raise a one-line ``ValueError``."""
    checkpoint = load_checkpoint(weights, map_location='cpu')
    state, _ = state_dict_from_checkpoint(checkpoint, weights, 'params_ema')
    try:
        inferred = args_from_state_dict(state)
    except (ValueError, KeyError) as err:
        raise ValueError(f'Weights in {weights} are not DSMNet weights: {err}') from None
    recorded = arch_from_checkpoint(checkpoint, weights)
    if opt is not None:
        args, source = read_network_opt(opt), f'network_g of {opt}'
    elif recorded is not None:
        arch_type, args = recorded
        if arch_type != 'DSMNet':
            raise ValueError(f'{weights} holds the weights of a {arch_type}, not of a DSMNet')
        source = f'the arguments saved in {weights}'
    else:
        args, source = inferred, 'inferred from the weights'
    defaults = {k: p.default for k, p in inspect.signature(DSMNet).parameters.items()}
    unknown = set(args) - set(defaults)
    if unknown:
        raise ValueError(f'Unknown DSMNet arguments in {source}: {", ".join(sorted(unknown))}')
    try:
        model = DSMNet(**args)
        model.load_state_dict(state, strict=True)
    except (ValueError, TypeError, RuntimeError) as err:
        full = {**defaults, **args}
        differ = [f'{k}={full[k]!r} vs {v!r} in the weights' for k, v in inferred.items()
                  if list(np.atleast_1d(full[k])) != list(np.atleast_1d(v))]
        reason = '; '.join(differ) if differ else str(err).strip().splitlines()[0]
        raise ValueError(f'Weights in {weights} do not fit DSMNet({source}): {reason}') from None
    return model.eval()
