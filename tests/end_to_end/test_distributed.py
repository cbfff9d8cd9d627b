"""BasicSR's distributed trainer carries DerainModel over processes: 2 CPU processes on gloo."""
import json
import os

import pytest
import torch

from conftest import RECORDER, REPO, run_entry, train_options, write_yaml

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
