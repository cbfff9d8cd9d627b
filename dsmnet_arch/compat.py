"""Fixes BasicSR 1.4.2 needs on today's PyTorch stack, applied at ``import dsmnet_arch``.

BasicSR 1.4.2 (the current PyPI release) was written for torch 1.x and CUDA machines. The fixes
that make it run here, for every model and not only this package's, live here, none in
site-packages; :func:`apply` runs once, before anything else of this package imports ``basicsr``.
Each patch's docstring names the failure it prevents and why the patch has to be global: each
one replaces a module BasicSR imports or a function its trainer calls before any model exists,
so no subclass can take its place. What is DerainModel's own (weights-only loading with the
recorded-network check, validation on the bare network, DDP on the CPU) is in DerainModel's
overrides and leaves BasicSR's classes as they are. (torch's weights-only loading allows the
``collections.Counter`` of BasicSR's training states by itself: no allow-list is needed.)

:data:`ORIGINALS` keeps each function replaced in BasicSR, by its dotted name
(tests/test_compat.py shows with them the failures the patches prevent).
"""
import os
import sys
import types

import torch

from dsmnet_arch.checkpoint import load_checkpoint

_applied = False
#: BasicSR's own functions that :func:`apply` replaced, by dotted name (``'basicsr.train.load_resume_state'``).
ORIGINALS = {}


def _replace(owner, name, new):
    """``owner.name = new`` (``owner`` a module), BasicSR's original kept in :data:`ORIGINALS`."""
    ORIGINALS.setdefault(f'{owner.__name__}.{name}', getattr(owner, name))
    setattr(owner, name, new)


def _patch_functional_tensor():
    """Prevents: ``import basicsr`` fails, ``No module named 'torchvision.transforms.functional_tensor'``.

    ``basicsr.data.degradations`` imports that module, which torchvision 0.17 renamed to
    ``_functional_tensor``; a module alias under the old name (an import has no narrower place).
    """
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision still has it)
    except ImportError:
        from torchvision.transforms import _functional_tensor
        shim = types.ModuleType(name)
        shim.__dict__.update({k: v for k, v in vars(_functional_tensor).items() if not k.startswith('__')})
        sys.modules[name] = shim


def _patch_resume_state():
    """Prevents: resuming fails without a GPU (BasicSR maps the state to ``torch.cuda.current_device()``).

    Also: an explicit ``resume_state`` from another folder resumed into a new experiment folder
    that holds none of its weights, and ``--auto_resume`` looked under the current directory, not
    ``root_path``. Global because ``basicsr.train.train_pipeline`` calls ``load_resume_state``
    before any model exists. The state is loaded onto the CPU, weights only (the optimizers'
    ``load_state_dict`` then puts each tensor where a fresh optimizer keeps it: moments beside the
    parameters, Adam's step counters on the CPU, so a state saved on any device resumes on any
    other), and the run goes on writing into the experiment folder that holds the state file.
    """
    import basicsr.train
    from basicsr.utils import check_resume

    def load_resume_state(opt):
        path = _resume_state_path(opt)
        if path is None:
            return None
        opt['path']['resume_state'] = path
        state = load_checkpoint(path, map_location='cpu')
        if not isinstance(state, dict) or not {'epoch', 'iter', 'optimizers', 'schedulers'} <= set(state):
            raise ValueError(f'Cannot resume from {path}: not a BasicSR training state '
                             '(expected the keys "epoch", "iter", "optimizers", "schedulers")')
        experiment = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        opt['path'].update(experiments_root=experiment, log=experiment, models=os.path.join(experiment, 'models'),
                           training_states=os.path.dirname(os.path.abspath(path)),
                           visualization=os.path.join(experiment, 'visualization'))
        check_resume(opt, state['iter'])
        return state

    _replace(basicsr.train, 'load_resume_state', load_resume_state)


def _resume_state_path(opt):
    """BasicSR's choice of state file: the newest ``*.state`` with ``--auto_resume``, else the option."""
    if opt['auto_resume']:
        state_dir = os.path.join(opt.get('root_path', '.'), 'experiments', opt['name'], 'training_states')
        if os.path.isdir(state_dir):
            stems = (os.path.splitext(f) for f in os.listdir(state_dir))
            iters = [int(stem) for stem, ext in stems if ext == '.state' and stem.isdigit()]
            if iters:
                return os.path.join(state_dir, f'{max(iters)}.state')
        return None
    return opt['path'].get('resume_state')


def _patch_dist_init():
    """Prevents: ``--launcher pytorch`` or ``slurm`` without GPUs fails, ``ZeroDivisionError`` (rank % 0 GPUs).

    ``dist_util._init_dist_pytorch`` and ``_init_dist_slurm`` call ``torch.cuda.set_device(rank %
    device_count)``; they also take the global rank, not ``LOCAL_RANK``, for the device of a
    multi-node run. Without CUDA they now use the gloo backend and no device. Global because
    ``train_pipeline`` initialises the process group before any model exists.
    """
    import subprocess

    import torch.distributed as dist

    from basicsr.utils import dist_util

    def init(backend, local_rank):
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        else:
            backend = 'gloo'
        dist.init_process_group(backend=backend)

    def _init_dist_pytorch(backend, **kwargs):
        init(backend, int(os.environ.get('LOCAL_RANK', os.environ['RANK'])))

    def _init_dist_slurm(backend, port=None):
        proc_id, ntasks = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % max(torch.cuda.device_count(), 1)))
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ.update(WORLD_SIZE=str(ntasks), RANK=str(proc_id), LOCAL_RANK=str(local_rank))
        init(backend, local_rank)

    _replace(dist_util, '_init_dist_pytorch', _init_dist_pytorch)
    _replace(dist_util, '_init_dist_slurm', _init_dist_slurm)


def apply():
    """Apply every fix once; safe to call again."""
    global _applied
    if _applied:
        return
    _patch_functional_tensor()
    _patch_resume_state()
    _patch_dist_init()
    _applied = True


apply()
