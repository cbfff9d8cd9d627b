"""The plugin as a BasicSR user meets it: train -> test through the entry points (the import: tests/test_init.py)."""
import glob
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, eval_options, run_entry, train_options, write_yaml

pytestmark = pytest.mark.slow  # BasicSR pipelines in subprocesses


def _assert_cycle(work, name, train_args, test_args, env=None, mab_variant='M5'):
    """Train (4 iterations, validation and checkpoints every 2), then test the latest weights."""
    proc = run_entry(train_args, cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = os.path.join(work, 'experiments', name)
    models = sorted(os.listdir(os.path.join(exp, 'models')))
    assert models == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(os.path.join(exp, 'training_states'))) == ['2.state', '4.state']
    weights = torch.load(os.path.join(exp, 'models', 'net_g_latest.pth'), weights_only=True)
    assert set(weights) == {'params', 'arch'} and all(torch.isfinite(v).all() for v in weights['params'].values())
    # the network's arguments beside the weights, every one (defaults too); plain BasicSR reads only params
    assert weights['arch'] == dict(type='DSMNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=2,
                                   kernel_sizes=[1, 3, 5], dilated=False, attention='ca+sa', num_subspaces=4,
                                   reduction=4, mab_variant=mab_variant, level_down=True, level_up=True,
                                   level_dense=True, res_scale=1.0)
    log = open(glob.glob(os.path.join(exp, 'train_*.log'))[0]).read()
    assert 'End of training' in log
    assert log.count('Validation toy_val') == 3  # iterations 2 and 4, and after training
    assert '# psnr_y:' in log and '# ssim_rgb:' in log and 'l_pix:' in log
    assert glob.glob(os.path.join(work, 'tb_logger', name, 'events.out.tfevents.*'))

    proc = run_entry(test_args, cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = os.path.join(work, 'results', f'{name}_test')
    assert sorted(os.listdir(os.path.join(results, 'visualization', 'toy_test'))) == [
        f'val000_{name}_test.png', f'val001_{name}_test.png']
    test_log = open(glob.glob(os.path.join(results, 'test_*.log'))[0]).read()
    assert 'Validation toy_test' in test_log and '# psnr_y:' in test_log
    return exp


@pytest.mark.parametrize('num_gpu', [0, 'auto'])
def test_train_validate_checkpoint_test_cycle(tmp_path, toy_data, num_gpu):
    work = str(tmp_path / 'work')
    os.makedirs(work)
    name = f'cycle_{num_gpu}'
    # total_iter 1000 in the file, cut to 4 with --force_yml, as basicsr/train.py allows
    train_opt = train_options(toy_data, name=name, total_iter=1000, num_gpu=num_gpu)
    weights = os.path.join('experiments', name, 'models', 'net_g_latest.pth')
    test_opt = eval_options(toy_data, weights, name=f'{name}_test', num_gpu=num_gpu)
    train_opt['network_g']['mab_variant'] = test_opt['network_g']['mab_variant'] = 'M3'  # a paper Table 5 variant
    train_yml, test_yml = write_yaml(tmp_path / 'train.yml', train_opt), write_yaml(tmp_path / 'test.yml', test_opt)
    _assert_cycle(
        work, name,
        [os.path.join(REPO, 'dsmnet_arch', 'train.py'), '-opt', train_yml, '--force_yml', 'train:total_iter=4'],
        ['-m', 'dsmnet_arch.test', '-opt', test_yml], mab_variant='M3')


def test_non_editable_install_writes_into_working_directory(tmp_path, toy_data):
    target = tmp_path / 'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                           '--no-warn-script-location', '--target', str(target), REPO],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = str(tmp_path / 'elsewhere')
    os.makedirs(work)
    env = {'PYTHONPATH': str(target)}
    where = run_entry(['-c', 'import dsmnet_arch; print(dsmnet_arch.__file__)'], cwd=work, env=env)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr

    train_yml = write_yaml(tmp_path / 'train.yml', train_options(toy_data, name='installed'))
    weights = os.path.join('experiments', 'installed', 'models', 'net_g_latest.pth')
    test_yml = write_yaml(tmp_path / 'test.yml', eval_options(toy_data, weights, name='installed_test'))
    _assert_cycle(work, 'installed', ['-m', 'dsmnet_arch.train', '-opt', train_yml],
                  ['-m', 'dsmnet_arch.test', '-opt', test_yml], env=env)
    assert not glob.glob(os.path.join(str(target), 'experiments'))
    assert not glob.glob(os.path.join(str(target), 'results'))
