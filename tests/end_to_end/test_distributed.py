"""BasicSR's distributed trainer carries DerainModel over processes: 2 CPU processes on gloo.

Also the multi-process runs of DerainModel's options: a non-finite loss (train: nonfinite_loss) or a
divergence (train: guard) on one process is decided by all, and train: sync_bn's BatchNorm statistics
on two CPU processes and, CUDA-marked, on two GPU processes.
"""
import copy
import glob
import json
import os
import textwrap

import pytest
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet, MSESSIMLoss, DerainModel)

from basicsr.models import build_model

from conftest import RECORDER, REPO, SYNC_BN_OPT, poisoned_training_script, run_entry, train_options, write_yaml

pytestmark = pytest.mark.slow  # two processes each


def test_two_gloo_processes_train_in_step(tmp_path, toy_data):
    (tmp_path / 'recorder.py').write_text(RECORDER)
    opt = train_options(toy_data, name='ddp', total_iter=4)
    opt['datasets']['train']['batch_size_per_gpu'] = 1  # 2 processes x 1 = the batch of 2 of one process
    yml = write_yaml(tmp_path / 'ddp.yml', opt)
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'recorder.py', '-opt', yml,
                      '--launcher', 'pytorch'], cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [json.load(open(tmp_path / f'rank{r}.json')) for r in (0, 1)]
    weights = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    trained = torch.load(tmp_path / 'experiments' / 'ddp' / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert all(torch.equal(trained[k], weights[0][k]) for k in weights[0])

    # 4 pairs over 2 processes: each epoch gives each process 2 different pairs
    first_epoch = [{name for batch in r['samples'][:2] for name in batch} for r in ranks]
    assert len(first_epoch[0]) == len(first_epoch[1]) == 2 and not first_epoch[0] & first_epoch[1]

    # checkpoints at iterations 2 and 4 and the latest (network + state, state not for latest): rank 0 alone
    assert ranks[0]['saves'] == 2 * 2 + 1 and ranks[1]['saves'] == 0
    assert ranks[0]['validations'] == 3 and ranks[1]['validations'] == 0
    log = open(next((tmp_path / 'experiments' / 'ddp').glob('train_ddp_*.log'))).read()
    assert 'World size (gpu number): 2' in log and log.count('Validation toy_val') == 3
    assert ranks[0]['backend'] == ranks[1]['backend'] == ('nccl' if torch.cuda.is_available() else 'gloo')


def test_slurm_launcher_on_cpu(tmp_path, toy_data):
    """--launcher slurm reads SLURM_* variables (here: one task) and asks scontrol for the master node."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'scontrol').write_text('#!/bin/sh\necho 127.0.0.1\n')
    (bin_dir / 'scontrol').chmod(0o755)
    opt = train_options(toy_data, name='slurm', total_iter=2)
    opt['dist_params']['port'] = 29400 + os.getpid() % 500  # as a slurm options file sets it
    env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'SLURM_PROCID': '0', 'SLURM_NTASKS': '1', 'SLURM_LOCALID': '0',
           'SLURM_NODELIST': 'node-[1-2]'}
    yml = write_yaml(tmp_path / 'slurm.yml', opt)
    proc = run_entry([os.path.join(REPO, 'dsmnet_arch', 'train.py'), '-opt', yml, '--launcher', 'slurm'],
                     cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(next((tmp_path / 'experiments' / 'slurm').glob('train_slurm_*.log'))).read()
    assert "dist: True" in log and 'World size (gpu number): 1' in log
    assert (tmp_path / 'experiments' / 'slurm' / 'models' / 'net_g_latest.pth').exists()


NAN_ON_RANK_1 = poisoned_training_script('''
    if int(os.environ['RANK']) == 1 and current_iter == 2:  # this process alone sees a NaN loss
        loss = self.cri_pix
        self.cri_pix = lambda output, gt: loss(output, gt) * float('nan')
        undo.append(lambda: setattr(self, 'cri_pix', loss))
''')


@pytest.mark.parametrize('policy', ['skip', 'stop'])
def test_a_nan_on_one_process_is_decided_by_all(tmp_path, toy_data, policy):
    """Both processes skip (or stop at) the batch one of them found non-finite; neither waits forever."""
    (tmp_path / 'nan_on_rank_1.py').write_text(NAN_ON_RANK_1)
    opt = train_options(toy_data, name='nan', total_iter=3, nonfinite_loss=policy)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    yml = write_yaml(tmp_path / 'nan.yml', opt)
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'nan_on_rank_1.py', '-opt',
                      yml, '--launcher', 'pytorch'], cwd=str(tmp_path), timeout=240)
    log = open(glob.glob(str(tmp_path / 'experiments' / 'nan' / 'train_nan_*.log'))[0]).read()
    if policy == 'skip':
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # rank 0's own loss was finite; it skipped because rank 1's was not
        assert 'Non-finite loss at iteration 2: l_pix=' in log and 'batch skipped' in log
        assert 'l_pix=nan' not in log
        weights = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    else:
        assert proc.returncode != 0
        output = proc.stdout + proc.stderr
        assert output.count('Non-finite loss at iteration 2') >= 2  # raised in both processes
        assert not (tmp_path / 'experiments' / 'nan' / 'models' / 'net_g_latest.pth').exists()


SPIKE_ON_RANK_1 = poisoned_training_script('''
    if int(os.environ['RANK']) == 1 and current_iter == 12:  # this process alone sees it
        if os.environ['POISON'] == 'spike':
            self.gt = self.gt + 50
        else:
            net = self.get_bare_model(self.net_g)
            undo.append(net.conv_first.weight.register_hook(lambda g: g * float('nan')).remove)
''')


@pytest.mark.parametrize('poison', ['spike', 'nan-gradient'])
def test_two_processes_roll_back_together(tmp_path, toy_data, poison):
    (tmp_path / 'spike_on_rank_1.py').write_text(SPIKE_ON_RANK_1)
    opt = train_options(toy_data, name='guard', total_iter=13, guard=dict(snapshot_every=4))  # 10 losses before
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['val']['val_freq'] = 100
    yml = write_yaml(tmp_path / 'guard.yml', opt)
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'spike_on_rank_1.py',
                      '-opt', yml, '--launcher', 'pytorch'], cwd=str(tmp_path), env=dict(POISON=poison), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(glob.glob(str(tmp_path / 'experiments' / 'guard' / 'train_guard_*.log'))[0]).read()
    reason = 'loss ' if poison == 'spike' else 'non-finite gradient norm'
    assert f'Divergence guard at iteration 12: {reason}' in log  # rank 0 logs; its own batch was fine
    assert 'rolled back to the state of iteration 4' in log
    weights = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert all(torch.isfinite(v).all() for v in weights[0].values())
    assert os.path.exists(tmp_path / 'experiments' / 'guard' / 'models' / 'net_g_latest.pth')


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
    (tmp_path / 'opt.json').write_text(json.dumps(SYNC_BN_OPT))
    (tmp_path / 'two.py').write_text(TWO_PROCESSES)
    env = {'CUDA_VISIBLE_DEVICES': ''} if device == 'cpu' else {}
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'two.py', device],
                     cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1)], lq, gt


def one_process_buffers(lq, gt, device):
    """The network's buffers after one DerainModel step on ``lq``/``gt`` in one process (no sync_bn)."""
    torch.manual_seed(0)
    model = build_model(dict(copy.deepcopy(SYNC_BN_OPT), dist=False, rank=0, world_size=1,
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
