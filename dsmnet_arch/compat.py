"""Fixes BasicSR 1.4.2 needs on today's PyTorch stack, applied at ``import dsmnet_arch``.

BasicSR 1.4.2 (the current PyPI release) was written for torch 1.x and CUDA machines. Every
fix it needs lives here, none in site-packages. :func:`apply` runs once, before anything
else of this package imports ``basicsr``; each patch says which BasicSR behaviour it fixes.
"""
import collections
import os
import sys
import types

import torch

from dsmnet_arch.checkpoint import arch_mismatch, load_checkpoint, state_dict_from_checkpoint

_applied = False


def _patch_functional_tensor():
    # basicsr.data.degradations imports torchvision.transforms.functional_tensor (removed in torchvision 0.17).
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


def _patch_torch_load_globals():
    # BasicSR's training states hold MultiStepLR milestones as collections.Counter, which
    # torch.load(weights_only=True) (the default since torch 2.6) refuses unless allow-listed.
    torch.serialization.add_safe_globals([collections.Counter])


def _patch_resume_state():
    # basicsr.train.load_resume_state maps the state with storage.cuda() (fails without a GPU),
    # unpickles with torch's defaults, and resolves the experiment folder against the current
    # directory, so an explicit resume_state from elsewhere finds no models and no folders.
    # Load onto the CPU, weights only (the optimizers' load_state_dict then puts each tensor where a
    # fresh optimizer keeps it: moments beside the parameters, Adam's step counters on the CPU, so a
    # state saved on any device resumes on any other), and continue writing into the experiment
    # folder that holds the state file.
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

    basicsr.train.load_resume_state = load_resume_state


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


def _patch_load_network():
    # BaseModel.load_network unpickles a user-given file with torch's defaults and fails with a
    # KeyError or a pickle traceback on a foreign file. Load weights-only, name the file on error.
    # It also loads weights into any network whose shapes fit, and DSM-Net's Table 5 variants all
    # fit each other: where the checkpoint records its network, another one is refused (strict) or
    # named in a warning.
    from basicsr.models.base_model import BaseModel
    from basicsr.utils import get_root_logger

    def load_network(self, net, load_path, strict=True, param_key='params'):
        net = self.get_bare_model(net)
        checkpoint = load_checkpoint(load_path)
        state_dict, param_key = state_dict_from_checkpoint(checkpoint, load_path, param_key)
        network_opt = next((v for k, v in self.opt.items() if k.startswith('network_') and isinstance(v, dict)
                            and v.get('type') == type(net).__name__), None)
        differ = arch_mismatch(checkpoint, load_path, network_opt, type(net))
        if differ:
            message = (f'Weights in {load_path} were saved from another {type(net).__name__}: '
                       f'{"; ".join(differ)} (options vs checkpoint)')
            if strict:
                raise ValueError(f'{message}; make the options match, or load them anyway with strict loading off '
                                 '(path: strict_load_g: false)')
            get_root_logger().warning(message)
        get_root_logger().info(f'Loading {net.__class__.__name__} model from {load_path}, '
                               f'with param key: [{param_key}].')
        self._print_different_keys_loading(net, state_dict, strict)
        try:
            net.load_state_dict(state_dict, strict=strict)
        except RuntimeError as err:
            raise ValueError(f'Weights in {load_path} do not fit {net.__class__.__name__}: '
                             f'{str(err).splitlines()[0]}') from None

    BaseModel.load_network = load_network


def _patch_ddp():
    # BaseModel.model_to_device wraps DDP with device_ids=[torch.cuda.current_device()]: fails
    # on CPU (gloo) processes. CPU modules take device_ids=None.
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    from basicsr.models.base_model import BaseModel

    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    BaseModel.model_to_device = model_to_device


def _patch_validation_forward():
    # SRModel.test runs the DistributedDataParallel wrapper on rank 0 alone; DDP broadcasts
    # buffers (BatchNorm statistics) in every forward, a collective the other ranks never join:
    # a hang on nccl, a crash on gloo. Validation needs no collective: run the bare network.
    from basicsr.models.sr_model import SRModel

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq)
        net.train(was_training)

    SRModel.test = test


def _patch_dist_init():
    # dist_util._init_dist_pytorch/_slurm call torch.cuda.set_device(rank % device_count): a
    # ZeroDivisionError without GPUs, and the global rank (not LOCAL_RANK) on multi-node runs.
    # Without CUDA, use the gloo backend and no device.
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

    dist_util._init_dist_pytorch = _init_dist_pytorch
    dist_util._init_dist_slurm = _init_dist_slurm


def apply():
    """Apply every fix once; safe to call again."""
    global _applied
    if _applied:
        return
    _patch_functional_tensor()
    _patch_torch_load_globals()
    _patch_resume_state()
    _patch_load_network()
    _patch_ddp()
    _patch_validation_forward()
    _patch_dist_init()
    _applied = True


apply()
