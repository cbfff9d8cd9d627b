"""train: sync_bn: BatchNorm statistics over the whole batch of a distributed run (torch.nn.SyncBatchNorm).

PyTorch synchronises BatchNorm on GPUs only (``torch.batch_norm_stats`` has no CPU kernel), so the
statistics themselves are checked in the CUDA-marked test of tests/end_to_end/test_distributed.py: two
processes on gloo (which, unlike nccl, lets both share one GPU) with different halves of a batch end one
step with identical running statistics, equal to one process's on the whole batch. There too, on the CPU:
two gloo processes without sync_bn keep statistics of their own halves (what the option is for), and a
distributed CPU run with it stops with one line naming the option. Here: the conversion itself and the no-op
outside distributed runs (the options check: tests/test_checks.py).
"""
import copy
import io
import logging

import pytest
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet, MSESSIMLoss, DerainModel)
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from basicsr.models import build_model
from basicsr.models.base_model import BaseModel

from conftest import NETWORK, SYNC_BN_OPT


def derain_model(**train_options):
    opt = copy.deepcopy(SYNC_BN_OPT)
    opt['train'].update(train_options)
    opt.update(dist=False, rank=0, world_size=1, num_gpu=0)
    torch.manual_seed(0)
    return build_model(opt)


def logged(function):
    """What ``function()`` logs through BasicSR's logger (which does not propagate), and its result."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger('basicsr')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # as BasicSR's trainer sets it (here it may not have run)
    try:
        result = function()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return stream.getvalue(), result


def test_sync_bn_converts_every_batchnorm_before_the_ddp_wrapping(monkeypatch):
    """The override's own work, with what needs GPUs and a process group stood in for: BasicSR's wrapping
    receives the network with all 12 BatchNorm layers as SyncBatchNorm, weights and statistics kept."""
    model = derain_model()
    wrapped = []
    monkeypatch.setattr(BaseModel, 'model_to_device', lambda self, net: wrapped.append(net) or net)
    monkeypatch.setattr(torch.distributed, 'get_world_size', lambda group=None: 2)
    model.opt['dist'], model.opt['train']['sync_bn'] = True, True
    model.device = torch.device('cuda')  # a device object only: nothing is moved (wrapping stood in for)
    net = DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'})
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    before = copy.deepcopy(net.state_dict())
    log, converted = logged(lambda: model.model_to_device(net))
    assert wrapped == [converted]
    kinds = [type(m) for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert kinds == [torch.nn.SyncBatchNorm] * 12
    after = converted.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert 'train:sync_bn: 12 BatchNorm layers of DSMNet synchronised over 2 processes' in log

    model.opt['train']['sync_bn'] = False  # off: the network goes to the wrapping as it is
    plain = DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'})
    assert model.model_to_device(plain) is plain and not any(
        isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())


def test_without_a_distributed_run_sync_bn_changes_nothing_and_says_so():
    log, model = logged(lambda: derain_model(sync_bn=True))
    assert 'train:sync_bn: true does nothing without a distributed run' in log
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.net_g.modules()) == 12
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.net_g.modules())
    log, _ = logged(lambda: derain_model())
    assert 'sync_bn' not in log


@pytest.mark.parametrize('value', ['yes', 1, [True]])
def test_a_bad_sync_bn_value_is_one_line_naming_the_option(value):
    with pytest.raises(ValueError, match=r'^train:sync_bn must be true or false, got '):
        derain_model(sync_bn=value)
