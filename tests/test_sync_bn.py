"""train: sync_bn: BatchNorm statistics over the whole batch of a distributed run (torch.nn.SyncBatchNorm).

PyTorch synchronises BatchNorm on GPUs only (``torch.batch_norm_stats`` has no CPU kernel), so the
statistics themselves are checked in the CUDA-marked test: two processes on gloo (which, unlike nccl,
lets both share one GPU) with different halves of a batch end one step with identical running
statistics, equal to one process's on the whole batch. On the CPU: two gloo processes without
sync_bn keep statistics of their own halves (what the option is for), a distributed CPU run with it
stops with one line naming the option, the conversion itself, the no-op outside distributed runs,
and the options check.
"""
import copy
import io
import logging
import textwrap

import pytest
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet, MSESSIMLoss, DerainModel)
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checks import OptionsError, check_options

from basicsr.models import build_model
from basicsr.models.base_model import BaseModel

from conftest import run_entry, train_options

NETWORK = dict(type='DSMNet', num_feat=8, num_levels=2, num_subspaces=4)  # ca+sa: 2 BatchNorm layers per CADB
OPT = dict(name='sync_bn', model_type='DerainModel', scale=1, is_train=True, network_g=NETWORK,
           path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
           train=dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999]),
                      scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                      pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2)))

# One training step of DerainModel in each of two processes, each on its own half of batch.pt, without
# and with train:sync_bn; saves, per rank, the network's buffers after the step (or the error).
TWO_PROCESSES = textwrap.dedent('''
    import copy, json, os, sys
    import torch
    import torch.distributed as dist
    import dsmnet_arch
    from basicsr.models import build_model

    device = sys.argv[1]
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    dist.init_process_group('gloo')  # gloo for both: nccl refuses two ranks on one GPU
    if device == 'cuda':
        torch.cuda.set_device(rank % torch.cuda.device_count())
        torch.backends.cudnn.allow_tf32 = False  # fp32 convolutions, as the one-process reference
    lq, gt = torch.load('batch.pt', weights_only=True)
    half = slice(rank * len(lq) // world, (rank + 1) * len(lq) // world)
    result = {}
    for sync_bn in (False, True):
        opt = json.load(open('opt.json'))
        opt['train']['sync_bn'] = sync_bn
        opt.update(dist=True, rank=rank, world_size=world, num_gpu=1 if device == 'cuda' else 0)
        torch.manual_seed(0)
        try:
            model = build_model(opt)
        except ValueError as err:
            result[f'sync_bn={sync_bn}'] = str(err)
            continue
        model.feed_data({'lq': lq[half], 'gt': gt[half]})
        model.optimize_parameters(1)
        net = model.get_bare_model(model.net_g)
        result[f'sync_bn={sync_bn}'] = {k: v.detach().cpu() for k, v in net.named_buffers()}
        norms = {type(m).__name__ for m in net.modules() if 'Norm' in type(m).__name__}
        result[f'sync_bn={sync_bn} layers'] = sorted(norms)
    torch.save(result, f'rank{rank}.pt')
''')


def batch(n=4, size=32):
    gen = torch.Generator().manual_seed(1)
    lq = torch.rand(n, 3, size, size, generator=gen)
    return lq, (lq * 0.8 + 0.1 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)


def run_two_processes(tmp_path, device):
    """Both ranks' results of TWO_PROCESSES on ``device``, and the batch they shared."""
    import json

    lq, gt = batch()
    torch.save((lq, gt), tmp_path / 'batch.pt')
    (tmp_path / 'opt.json').write_text(json.dumps(OPT))
    (tmp_path / 'two.py').write_text(TWO_PROCESSES)
    env = {'CUDA_VISIBLE_DEVICES': ''} if device == 'cpu' else {}
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'two.py', device],
                     cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1)], lq, gt


def one_process_buffers(lq, gt, device):
    """The network's buffers after one DerainModel step on ``lq``/``gt`` in one process (no sync_bn)."""
    torch.manual_seed(0)
    model = build_model(dict(copy.deepcopy(OPT), dist=False, rank=0, world_size=1,
                             num_gpu=1 if device == 'cuda' else 0))
    model.feed_data({'lq': lq, 'gt': gt})
    model.optimize_parameters(1)
    return {k: v.detach().cpu() for k, v in model.get_bare_model(model.net_g).named_buffers()}


def statistics(buffers):
    """The BatchNorm running means and variances (what sync_bn changes), by name."""
    stats = {k: v for k, v in buffers.items() if k.endswith(('running_mean', 'running_var'))}
    assert len(stats) == 2 * 12  # 2 buffers x 12 BatchNorm layers: 2 in each of 6 CADBs (3 MABs, 2 fusions, head)
    return stats


def close(a, b, atol=1e-5):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU: torch.cuda.is_available() is False')
def test_two_gpu_processes_with_sync_bn_have_the_statistics_of_the_whole_batch(tmp_path, monkeypatch):
    ranks, lq, gt = run_two_processes(tmp_path, 'cuda')
    assert all(r['sync_bn=True layers'] == ['SyncBatchNorm'] for r in ranks)
    assert all(r['sync_bn=False layers'] == ['BatchNorm2d'] for r in ranks)
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    whole = statistics(one_process_buffers(lq, gt, 'cuda'))

    synced = [statistics(r['sync_bn=True']) for r in ranks]
    assert all(torch.equal(synced[0][k], synced[1][k]) for k in synced[0])  # identical in both processes
    assert close(synced[0], whole)  # those of one process on the concatenated batch

    apart = [statistics(r['sync_bn=False']) for r in ranks]
    assert not close(apart[0], apart[1]) and not close(apart[0], whole)  # without it: each its own half
    assert close(apart[0], statistics(one_process_buffers(lq[:2], gt[:2], 'cuda')))


def test_two_cpu_processes_keep_the_statistics_of_their_halves_and_refuse_sync_bn(tmp_path):
    """Without sync_bn each process's BatchNorm sees its own images: rank r's running statistics are one
    process's on half r alone, and the two differ. With it, a CPU run stops with one line naming it."""
    ranks, lq, gt = run_two_processes(tmp_path, 'cpu')
    apart = [statistics(r['sync_bn=False']) for r in ranks]
    assert not close(apart[0], apart[1])
    for r, half in enumerate((slice(0, 2), slice(2, 4))):
        assert close(apart[r], statistics(one_process_buffers(lq[half], gt[half], 'cpu')))
    assert not close(apart[0], statistics(one_process_buffers(lq, gt, 'cpu')))
    for r in ranks:
        assert r['sync_bn=True'] == ('train:sync_bn: true needs GPUs (torch.nn.SyncBatchNorm synchronises GPU '
                                     'tensors only) and this distributed run trains on the CPU; set train:sync_bn: '
                                     'false')


def derain_model(**train_options):
    opt = copy.deepcopy(OPT)
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


def test_the_options_check_knows_sync_bn(toy_data):
    assert check_options(train_options(toy_data, sync_bn=True)) == []
    with pytest.raises(OptionsError, match='Option train:syncbn is not read by BasicSR; did you mean train:sync_bn?'):
        check_options(train_options(toy_data, syncbn=True))
