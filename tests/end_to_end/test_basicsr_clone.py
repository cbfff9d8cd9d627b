"""BasicSR's own train.py and test.py in a clone linked by ``python -m dsmnet_arch.link_basicsr``: train, resume
and test run in subprocesses (the link itself: tests/test_link_basicsr.py)."""
import glob
import os

import pytest
import torch

from dsmnet_arch.link_basicsr import STUB_NAME, main

from conftest import eval_options, make_clone, run_entry, snapshot, train_options, write_yaml

pytestmark = pytest.mark.slow  # BasicSR pipelines in subprocesses


#: What running the clone's scripts adds to it: bytecode and BasicSR's output folders.
RUN_OUTPUTS = ('__pycache__', 'experiments', 'results', 'tb_logger')


def clone_env(clone):
    """The environment BasicSR's docs/TrainTest.md runs the clone's scripts in: PYTHONPATH="./:${PYTHONPATH}"."""
    return {'PYTHONPATH': os.pathsep.join(filter(None, [str(clone), os.environ.get('PYTHONPATH')]))}


def read_logs(folder, pattern):
    return ''.join(open(path).read() for path in sorted(glob.glob(os.path.join(folder, pattern))))


def test_clone_trains_resumes_and_tests_with_its_own_scripts(tmp_path, toy_data, capsys):
    clone = make_clone(tmp_path)
    before = snapshot(clone)
    env = clone_env(clone)
    train = ['basicsr/train.py', '-opt', write_yaml(tmp_path / 'train.yml', train_options(toy_data, 'clone', 2))]

    # as cloned, BasicSR 1.4.2 does not import with today's torchvision
    proc = run_entry(train, cwd=clone, env=env)
    assert proc.returncode != 0 and 'torchvision.transforms.functional_tensor' in proc.stderr, proc.stderr[-2000:]

    assert main([str(clone)]) == 0
    assert f'wrote   {clone / "basicsr" / "archs" / STUB_NAME}' in capsys.readouterr().out

    proc = run_entry(train, cwd=clone, env=env)  # two iterations, validation and checkpoints at 2
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = clone / 'experiments' / 'clone'
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_latest.pth']
    log = read_logs(exp, 'train_*.log')
    for line in ('Network [DSMNet] is created.', 'Loss [MSESSIMLoss] is created.', 'Model [DerainModel] is created.',
                 'End of training', 'Validation toy_val'):
        assert line in log
    weights = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)
    assert weights['arch']['type'] == 'DSMNet' and weights['arch']['num_feat'] == 8  # DerainModel's record

    # resume on the CPU (BasicSR's own load_resume_state maps the state to CUDA): the fix reaches the script
    proc = run_entry(train + ['--auto_resume', '--force_yml', 'train:total_iter=3'], cwd=clone, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = read_logs(exp, 'train_*.log')
    assert 'Resuming training from epoch: ' in log and 'iter: 2.' in log and log.count('End of training') == 2

    test_opt = eval_options(toy_data, str(exp / 'models' / 'net_g_latest.pth'), name='clone_test')
    proc = run_entry(['basicsr/test.py', '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], cwd=clone, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = clone / 'results' / 'clone_test'
    assert sorted(os.listdir(results / 'visualization' / 'toy_test')) == ['val000_clone_test.png',
                                                                          'val001_clone_test.png']
    assert '# psnr_y:' in read_logs(results, 'test_*.log')

    assert main(['--undo', str(clone)]) == 0
    assert not glob.glob(str(clone / 'basicsr' / 'archs' / '__pycache__' / 'dsmnet_link_arch.*'))
    assert snapshot(clone, skip=RUN_OUTPUTS) == before  # the clone's files as they were, only run outputs added
