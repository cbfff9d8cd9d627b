"""``python -m dsmnet_arch.link_basicsr`` on a clone laid out like BasicSR's repository, from the installed basicsr."""
import glob
import os
import shutil

import torch

from dsmnet_arch.link_basicsr import STUB, STUB_NAME, main, our_options

import basicsr

from conftest import eval_options, run_entry, train_options, write_yaml

#: What running the clone's scripts adds to it: bytecode and BasicSR's output folders.
RUN_OUTPUTS = ('__pycache__', 'experiments', 'results', 'tb_logger')


def make_clone(root):
    """A BasicSR clone as git leaves it: basicsr/ (the installed package's files), options/, VERSION."""
    clone = root / 'BasicSR'
    shutil.copytree(os.path.dirname(basicsr.__file__), clone / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    (clone / 'options' / 'train' / 'SRResNet_SRGAN').mkdir(parents=True)
    (clone / 'options' / 'train' / 'SRResNet_SRGAN' / 'train_MSRResNet_x4.yml').write_text('name: MSRResNet_x4\n')
    (clone / 'VERSION').write_text('1.4.2\n')
    return clone


def snapshot(clone, skip=()):
    """Every folder, file (its bytes) and symbolic link (its target) under ``clone``, except in ``skip`` folders."""
    entries = {}
    for folder, dirs, files in os.walk(clone):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, clone)
            if os.path.islink(path):
                entries[rel] = ('link', os.readlink(path))
            elif os.path.isdir(path):
                entries[rel] = ('folder', )
            else:
                with open(path, 'rb') as f:
                    entries[rel] = ('file', f.read())
    return entries


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


def test_link_is_idempotent_and_undo_restores_the_clone_byte_for_byte(tmp_path, capsys):
    clone = make_clone(tmp_path)
    (clone / 'options' / 'train_DSMNet_demo.yml').write_text('name: the user\'s own\n')  # a name ours also has
    before = snapshot(clone)

    assert main([str(clone)]) == 0
    out = capsys.readouterr().out
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    assert stub.read_text() == STUB
    assert f'left {clone / "options" / "train_DSMNet_demo.yml"} alone' in out
    # without PYTHONPATH="./:${PYTHONPATH}" the clone's scripts would import the installed basicsr: said so
    assert f'imports basicsr from {os.path.join(os.path.dirname(basicsr.__file__), "__init__.py")}, not from' in out
    linked = {name for name, entry in snapshot(clone).items() if entry[0] == 'link'}
    ours = {os.path.join('options', s.name) for s in our_options()}
    assert 'options/train_DSMNet_Rain100H.yml' in ours and linked == ours - {'options/train_DSMNet_demo.yml'}
    assert all(os.readlink(clone / name) == str(s) for name, s in zip(sorted(ours), our_options()) if name in linked)

    linked_once, mtime = snapshot(clone), stub.stat().st_mtime_ns
    assert main([str(clone)]) == 0
    assert 'already linked' in capsys.readouterr().out
    assert snapshot(clone) == linked_once and stub.stat().st_mtime_ns == mtime

    assert main(['--undo', str(clone)]) == 0
    assert snapshot(clone) == before
    assert main(['--undo', str(clone)]) == 0
    assert 'nothing to undo' in capsys.readouterr().out
    assert snapshot(clone) == before


def test_refuses_files_it_did_not_write_and_folders_that_are_not_clones(tmp_path, capsys):
    clone = make_clone(tmp_path)
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    stub.write_text('# the user\'s own arch\n')
    before = snapshot(clone)
    for args in ([str(clone)], ['--undo', str(clone)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'{stub}' in err and 'not written by this command' in err
        assert snapshot(clone) == before

    assert main([str(clone / 'basicsr')]) == 1
    assert f'give the clone, its parent: {clone}' in capsys.readouterr().err
    fork = tmp_path / 'Restormer'
    (fork / 'basicsr' / 'models' / 'archs').mkdir(parents=True)
    (fork / 'basicsr' / 'models' / 'archs' / '__init__.py').write_text('')
    assert main([str(fork)]) == 1
    assert 'docs/forks.md' in capsys.readouterr().err
    assert main([str(tmp_path / 'missing')]) == 1
    assert 'is not a folder' in capsys.readouterr().err
