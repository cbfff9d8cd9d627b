"""The training step as DerainModel runs it, timed by the benchmark and by the reproduction's estimate."""
import functools
import os

import torch
import yaml

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.benchmarks import REPO
from dsmnet_arch.benchmarks.reference import spec_flops
from dsmnet_arch.benchmarks.timing import PeakMemory, best_time, first_call
from dsmnet_arch.losses.mse_ssim_loss import MSESSIMLoss
from dsmnet_arch.models.training_step import TrainingStep
from dsmnet_arch.precision import COMPILE_DEFAULTS

from basicsr.utils.options import ordered_yaml

#: the paper's four training sets, whose options files give the protocol's iterations
PROTOCOL_DATASETS = ('Rain100H', 'Rain100L', 'Rain800', 'Rain1400')


def make_training_step(net, criterion, optimizer, lq, gt, precision, grad_clip_norm=None):
    """A function that runs one training step of ``net`` on the batch ``lq`` -> ``gt``: DerainModel's own step,
    :class:`~dsmnet_arch.models.training_step.TrainingStep` (forward under autocast in ``precision``, the loss on
    the float32 output, backward through a gradient scaler for fp16, the gradient norm clipped to
    ``grad_clip_norm``, the optimizer step). DerainModel's decisions around it (the divergence guard, the EMA)
    are not timed.
    """
    return functools.partial(TrainingStep(net, criterion, optimizer, lq.device, precision,
                                          grad_clip_norm=grad_clip_norm), lq, gt)


def benchmark_network(cfg, network_class=DSMNet):
    """The DSMNet that the benchmark times: the Rain100H training options' ``network_g`` (``res_scale``
    included) at the width ``cfg['num_feat']`` of the preset; ``network_class``: another version's DSMNet."""
    args = {k: v for k, v in training_options('Rain100H')['network_g'].items() if k != 'type'}
    return network_class(**dict(args, num_feat=cfg['num_feat']))


def training_step(cfg, device, precision, compile=False, net=None):
    """One DSM-Net training step (:func:`make_training_step`) on random [0, 1] patches of the preset's shape, ready
    to call: autocast in ``precision``, fp16 with a gradient scaler, the gradient norm clipped as the Rain100H
    training options clip it; ``compile``: the network ``torch.compile``'d. ``net``: the network to train
    (default: :func:`benchmark_network`); the patches are the same for every network. Returns ``(step, shape)``."""
    torch.manual_seed(0)
    shape = (cfg['batch'], 3, cfg['patch'], cfg['patch'])
    net = (benchmark_network(cfg) if net is None else net).to(device).train()
    model = torch.compile(net, **COMPILE_DEFAULTS) if compile else net
    criterion = MSESSIMLoss().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999))
    lq = torch.rand(shape, device=device)
    gt = (lq * 0.8 + 0.1).clamp(0, 1)
    clip = training_options('Rain100H')['train'].get('grad_clip_norm')
    return make_training_step(model, criterion, optimizer, lq, gt, precision, grad_clip_norm=clip), shape


def time_training_step(cfg, device, precision, repeats, compile=False):
    """Seconds per :func:`training_step`, with its rates, GFLOP/s and peak memory (``compile``: the first
    step's time, compiling included, is ``first_call_seconds``)."""
    step, shape = training_step(cfg, device, precision, compile=compile)
    first = first_call(step, device) if compile else None
    with PeakMemory(device) as peak:
        seconds = best_time(step, repeats, device)
    gflop = spec_flops(cfg['num_feat'], shape, train=True) / 1e9
    return dict(shape=list(shape), seconds=seconds, patches_per_s=shape[0] / seconds, iters_per_s=1 / seconds,
                gflop=gflop, gflops=gflop / seconds, peak_bytes=peak.bytes, first_call_seconds=first)


def protocol_times(seconds_per_iter):
    """Time of the paper's protocol on each training set: ``total_iter`` of its options x seconds per iteration."""
    rows = []
    for name in PROTOCOL_DATASETS:
        opt = training_options(name)
        iters = opt['train']['total_iter']
        rows.append(dict(dataset=name, total_iter=iters, batch=opt['datasets']['train']['batch_size_per_gpu'],
                         seconds=iters * seconds_per_iter))
    return rows


def training_options(dataset):
    """The training options file of ``dataset`` in this checkout's options/, as a dict."""
    with open(os.path.join(REPO, 'options', f'train_DSMNet_{dataset}.yml')) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])
