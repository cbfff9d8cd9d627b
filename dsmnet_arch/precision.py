"""How the network runs: its precision (autocast, gradient scaler) and ``torch.compile``'s arguments.

The one home of this policy for training (:class:`dsmnet_arch.models.derain_model.DerainModel`,
:class:`dsmnet_arch.models.training_step.TrainingStep`), inference (:mod:`dsmnet_arch.infer`) and
the benchmarks, so that what is timed is what runs.

Precisions are named ``'fp32'``, ``'bf16'`` and ``'fp16'`` (``None`` is read as fp32):

- fp32: no autocast.
- bf16: the forward pass under ``torch.autocast`` in bfloat16, on CPUs and on GPUs with native
  bfloat16 arithmetic (Ampere and later; emulated bf16 does not count). bf16 has fp32's exponent
  range, so no loss scaling.
- fp16: the forward pass under ``torch.autocast`` in float16, on CUDA GPUs only; training needs a
  gradient scaler (:func:`grad_scaler`) so that small gradients do not underflow.

Weights, optimizer state and the loss stay fp32 in every precision.
"""
import inspect

import torch

PRECISIONS = ('fp32', 'bf16', 'fp16')
#: The autocast dtype of each mixed precision (fp32 has none).
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}

#: ``torch.compile`` arguments that ``train:compile`` and ``dsmnet-derain --compile`` start from. Static
#: shapes: with symbolic ones (``dynamic`` true, or PyTorch's automatic choice after a shape change)
#: torch 2.14 fails on DSMNet's padding arithmetic (``TensorReferenceAnalysis`` has no ``python_mod``).
#: Training batches all have one shape; each new inference shape compiles once more.
COMPILE_DEFAULTS = {'dynamic': False}


def supported(precision, device):
    """Whether ``precision`` runs natively on ``device`` (a ``torch.device``): fp16 on CUDA GPUs only,
    bf16 on CPUs and on GPUs with bfloat16 arithmetic (not emulated), fp32 (and ``None``) everywhere."""
    if precision == 'fp16':
        return device.type == 'cuda'
    if precision == 'bf16' and device.type == 'cuda':
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return True


def autocast(device, precision):
    """The autocast context of ``precision`` on ``device``; for fp32 (or ``None``) a disabled one, so
    that fp32 also means fp32 inside an enclosing autocast. Reusable: ``with`` it as often as needed.
    Does not check :func:`supported` (:func:`inference_autocast` and :func:`train_precision` do)."""
    mixed = precision in AUTOCAST_DTYPES
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(precision), enabled=mixed)


def grad_scaler(device, precision):
    """A fresh ``torch.amp.GradScaler`` for training in fp16 on ``device``, else ``None`` (bf16 and fp32
    need no loss scaling)."""
    return torch.amp.GradScaler(device.type) if precision == 'fp16' else None


#: CPU features (Linux /proc/cpuinfo) of native bfloat16 arithmetic: x86 AMX-BF16 and AVX-512 BF16, Arm's BF16.
NATIVE_BF16_FLAGS = frozenset({'amx_bf16', 'avx512_bf16', 'bf16'})


def cpu_flags(path='/proc/cpuinfo'):
    """The feature flags the operating system reports for this CPU (``flags`` on x86, ``Features`` on Arm), or an
    empty set where there is no such file (macOS, Windows)."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    flags = set()
    for line in lines:
        key, _, value = line.partition(':')
        if key.strip() in ('flags', 'Features'):
            flags.update(value.split())
    return flags


def auto_precision(device):
    """What ``--precision auto`` runs in on ``device``: bf16 on a CPU with native bfloat16 arithmetic
    (:data:`NATIVE_BF16_FLAGS`; where the CPU does not say, it has none), fp32 on other CPUs and on GPUs
    (the inference default before ``auto``; choose fp16 or bf16 there explicitly)."""
    if device.type == 'cpu' and cpu_flags() & NATIVE_BF16_FLAGS:
        return 'bf16'
    return 'fp32'


def inference_autocast(device, precision):
    """The autocast context of ``dsmnet-derain --precision`` (:func:`autocast`), or a one-line ``ValueError``
    naming the option where ``device`` lacks the precision."""
    if precision == 'fp16' and not supported(precision, device):
        raise ValueError('--precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32')
    if precision == 'bf16' and not supported(precision, device):
        raise ValueError('--precision bf16: this GPU has no bfloat16 support; use fp16 or fp32')
    return autocast(device, precision)


def train_precision(train_opt, device):
    """The mixed precision that the ``train`` options ask for on ``device``: ``None`` (fp32), ``'bf16'``
    or ``'fp16'``.

    Reads ``amp`` (``bf16``, ``fp16`` or ``false``) and its older spelling ``bf16: true`` (the same as
    ``amp: bf16``). Raises a one-line ``ValueError`` naming the option for an unknown value, for
    contradicting ``amp`` and ``bf16``, for fp16 on a device other than a CUDA GPU and for bf16 on a GPU
    without bfloat16 arithmetic.
    """
    amp = train_opt.get('amp', False)
    if amp not in (False, None, *AUTOCAST_DTYPES):
        raise ValueError(f'train:amp must be one of bf16, fp16 or false, got {amp!r}')
    amp = amp or None
    if train_opt.get('bf16', False):
        if amp not in (None, 'bf16'):
            raise ValueError(f'train:bf16: true contradicts train:amp: {amp}; keep train:amp alone')
        amp = 'bf16'
    if amp == 'fp16' and not supported(amp, device):
        raise ValueError(f'train:amp: fp16 needs a CUDA GPU (float16 autocast with a gradient scaler), the model '
                         f'runs on {device.type}: use amp: bf16 or false there')
    if amp == 'bf16' and not supported(amp, device):
        raise ValueError(f'train:amp: bf16: {torch.cuda.get_device_name(device)} has no bfloat16 arithmetic; '
                         'use amp: fp16 (with a gradient scaler) or false')
    return amp


def compile_kwargs(value):
    """Keyword arguments of ``torch.compile`` for ``train:compile``: ``true`` (:data:`COMPILE_DEFAULTS`) or
    a mapping of its arguments (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options``, ...) that
    update them."""
    if value is True:
        return dict(COMPILE_DEFAULTS)
    known = set(inspect.signature(torch.compile).parameters) - {'model'}
    if not isinstance(value, dict) or not set(value) <= known:
        unknown = ', '.join(sorted(set(value) - known)) if isinstance(value, dict) else repr(value)
        raise ValueError(f'train:compile must be true, false or a mapping of torch.compile arguments '
                         f'({", ".join(sorted(known))}); got {unknown}')
    return {**COMPILE_DEFAULTS, **value}
