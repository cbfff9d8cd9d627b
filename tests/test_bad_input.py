"""Bad options and bad data stop the run before training, with one line that names the key or file."""
import logging
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import train_options, write_yaml


@pytest.fixture(autouse=True)
def fresh_basicsr_logger():
    """BasicSR sets its logger up once per process; each in-process run here needs its own."""
    yield
    from basicsr.utils import logger as basicsr_logger
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.clear()


def _run_train(monkeypatch, capsys, tmp_path, opt, *extra_args):
    """Run dsmnet_arch.train in this process; return (exit status, stderr)."""
    from dsmnet_arch import train

    import basicsr.train

    yml = write_yaml(tmp_path / 'train.yml', opt)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', yml, *extra_args])
    monkeypatch.setattr(basicsr.train, 'parse_options', basicsr.train.parse_options)  # undo the checking wrapper
    with pytest.raises(SystemExit) as exc:
        train.main()
    return exc.value.code, capsys.readouterr().err


def _break_data(root, case):
    """Damage the generated training pairs under ``root`` in one way; return the file concerned."""
    inp, tgt = os.path.join(root, 'input'), os.path.join(root, 'target')
    if case == 'renamed input':
        os.rename(os.path.join(inp, 'img001.png'), os.path.join(inp, 'img_1.png'))
        return os.path.join(tgt, 'img001.png')
    if case == 'extra input':
        shutil.copy(os.path.join(inp, 'img001.png'), os.path.join(inp, 'img009.png'))
        return 'img009.png'
    if case == 'size mismatch':
        cv2.imwrite(os.path.join(inp, 'img002.png'), np.zeros((30, 32, 3), np.uint8))
        return os.path.join(inp, 'img002.png')
    if case == 'not an image':
        open(os.path.join(tgt, 'notes.txt'), 'w').write('hello')
        return os.path.join(tgt, 'notes.txt')
    if case == 'corrupt image':
        open(os.path.join(inp, 'img003.png'), 'wb').write(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
        return os.path.join(inp, 'img003.png')
    if case == 'empty image':
        open(os.path.join(tgt, 'img000.png'), 'wb').close()
        return os.path.join(tgt, 'img000.png')
    if case == 'empty folder':
        shutil.rmtree(inp)
        os.makedirs(inp)
        return inp
    if case == 'missing folder':
        shutil.rmtree(tgt)
        return tgt
    raise AssertionError(case)


@pytest.mark.parametrize('case, expected', [
    ('renamed input', 'have no input'),
    ('extra input', 'have no target'),
    ('size mismatch', 'pair sizes differ'),
    ('not an image', 'is not an image file'),
    ('corrupt image', 'Unreadable image file'),
    ('empty image', 'Empty image file'),
    ('empty folder', 'holds no images'),
    ('missing folder', 'does not exist'),
])
def test_bad_training_data_is_named(monkeypatch, capsys, tmp_path, toy_data, case, expected):
    culprit = _break_data(os.path.join(toy_data, 'train'), case)
    status, err = _run_train(monkeypatch, capsys, tmp_path, train_options(toy_data))
    line = err.strip().splitlines()[-1]
    assert status == 1
    assert line.startswith('error: Option datasets:train:') and expected in line and culprit in line, line
    assert not os.path.exists(tmp_path / 'experiments')  # stopped before anything was written


def _lmdb_without_meta(tmp_path, toy_data):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    for side in ('input', 'target'):
        folder = os.path.join(toy_data, 'train', side)
        names = sorted(os.listdir(folder))
        make_lmdb_from_imgs(folder, str(tmp_path / f'{side}.lmdb'), names, [os.path.splitext(n)[0] for n in names])
    os.remove(tmp_path / 'target.lmdb' / 'meta_info.txt')
    opt = train_options(toy_data)
    opt['datasets']['train'].update(dataroot_lq=str(tmp_path / 'input.lmdb'), dataroot_gt=str(tmp_path / 'target.lmdb'),
                                    io_backend={'type': 'lmdb'})
    return opt


def _with(path, value):
    """A mutator that sets ``opt[path[0]][path[1]]... = value`` (value None deletes)."""

    def mutate(opt, tmp_path, toy_data):
        node = opt
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return opt

    return mutate


@pytest.mark.parametrize('mutate, expected', [
    (_with(['datasets', 'train', 'gt_size'], 64), 'datasets:train:gt_size is 64, larger than target'),
    (lambda opt, tmp_path, toy_data: _lmdb_without_meta(tmp_path, toy_data), 'meta_info.txt is missing'),
    (_with(['network_g', 'num_feats'], 16), 'network_g:num_feats is not an argument of DSMNet; did you mean '
     'network_g:num_feat?'),
    (_with(['network_g', 'type'], 'DSMnet'), "network_g:type: 'DSMnet' is not a registered architecture; "
     'did you mean DSMNet?'),
    (_with(['train', 'pixel_opt', 'type'], 'MSESSIMLos'), 'did you mean MSESSIMLoss?'),
    (_with(['train', 'pixle_opt'], {'type': 'MSESSIMLoss'}), 'train:pixle_opt is not read by BasicSR; did you mean '
     'train:pixel_opt?'),
    (_with(['train', 'total_iters'], 5), 'did you mean train:total_iter?'),
    (_with(['val', 'metrics', 'psnr_y', 'type'], 'calculate_psnrr'), 'did you mean calculate_psnr?'),
    (_with(['datasets', 'train', 'use_flip'], True), 'did you mean datasets:train:use_hflip?'),
    (_with(['model_type'], 'DerainModle'), 'did you mean DerainModel?'),
    (_with(['network_g', 'attention'], 'ca+xx'), 'attention'),
    (_with(['network_g', 'num_subspaces'], 3), 'num_subspaces'),
    (_with(['train', 'nonfinite_loss'], 'ignore'), "train:nonfinite_loss must be one of ('stop', 'skip')"),
])
def test_bad_options_are_named(monkeypatch, capsys, tmp_path, toy_data, mutate, expected):
    opt = mutate(train_options(toy_data), tmp_path, toy_data)
    status, err = _run_train(monkeypatch, capsys, tmp_path, opt)
    assert status == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith('error: ') and expected in line, line


class _Payload:
    """Unpickling this would create a marker file: stands for code hidden in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _bad_checkpoints(tmp_path):
    good = {'params': {'w': torch.zeros(2)}}
    torch.save(good, tmp_path / 'good.pth')
    data = open(tmp_path / 'good.pth', 'rb').read()
    files = {'truncated': data[:len(data) // 2], 'foreign': b'this is a text file, not a checkpoint\n'}
    for name, content in files.items():
        open(tmp_path / f'{name}.pth', 'wb').write(content)
    torch.save({'params': _Payload(str(tmp_path / 'PWNED'))}, tmp_path / 'malicious.pth', pickle_protocol=2)
    torch.save({'params': {'w': 'not a tensor'}}, tmp_path / 'strings.pth')
    return ['truncated', 'foreign', 'malicious', 'strings']


@pytest.mark.parametrize('path_key', ['pretrain_network_g', 'resume_state'])
def test_bad_checkpoints_are_refused_by_name(monkeypatch, capsys, tmp_path, toy_data, path_key):
    for name in _bad_checkpoints(tmp_path):
        opt = train_options(toy_data, name=f'bad_{name}')
        opt['path'][path_key] = str(tmp_path / f'{name}.pth')
        status, err = _run_train(monkeypatch, capsys, tmp_path, opt)
        line = err.strip().splitlines()[-1]
        assert status == 1 and line.startswith('error: ') and f'{name}.pth' in line, (name, err)
        assert 'Traceback' not in err
        assert not os.path.exists(tmp_path / 'experiments' / f'bad_{name}')  # refused before writing anything
    assert not os.path.exists(tmp_path / 'PWNED')


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(monkeypatch, capsys, tmp_path, toy_data):
    from dsmnet_arch.models.derain_model import DerainModel

    real_step = DerainModel.optimize_parameters

    def poisoned(self, current_iter):
        if current_iter == 3:
            self.lq = self.lq * float('nan')
        real_step(self, current_iter)

    monkeypatch.setattr(DerainModel, 'optimize_parameters', poisoned)
    status, err = _run_train(monkeypatch, capsys, tmp_path, train_options(toy_data, name='nan'))
    assert status == 1
    assert 'error: Non-finite loss at iteration 3: l_pix=nan' in err
    models = tmp_path / 'experiments' / 'nan' / 'models'
    assert sorted(os.listdir(models)) == ['net_g_2.pth']
    weights = torch.load(models / 'net_g_2.pth', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nonfinite_loss_skip_drops_the_batch(monkeypatch, capsys, tmp_path, toy_data):
    from dsmnet_arch import train
    from dsmnet_arch.models.derain_model import DerainModel

    import basicsr.train

    real_step = DerainModel.optimize_parameters
    snapshots = {}

    def poisoned(self, current_iter):
        if current_iter == 3:
            snapshots['before'] = {k: v.clone() for k, v in self.net_g.state_dict().items()}
            self.lq = self.lq * float('inf')
        real_step(self, current_iter)
        if current_iter == 3:
            snapshots['after'] = {k: v.clone() for k, v in self.net_g.state_dict().items()}

    monkeypatch.setattr(DerainModel, 'optimize_parameters', poisoned)
    opt = train_options(toy_data, name='skip', nonfinite_loss='skip')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', write_yaml(tmp_path / 'skip.yml', opt)])
    monkeypatch.setattr(basicsr.train, 'parse_options', basicsr.train.parse_options)
    train.main()
    changed = [k for k, v in snapshots['after'].items() if not torch.equal(snapshots['before'][k], v)]
    assert not changed
    log = open(next((tmp_path / 'experiments' / 'skip').glob('train_*.log'))).read()
    assert 'Non-finite loss at iteration 3' in log and 'batch skipped' in log
    assert (tmp_path / 'experiments' / 'skip' / 'models' / 'net_g_latest.pth').exists()


def test_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch):
    from dsmnet_arch.checkpoint import atomic_save

    target = tmp_path / 'net_g_latest.pth'
    atomic_save({'params': {'w': torch.ones(3)}}, target)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a checkpoint')
        raise KeyboardInterrupt  # stands for the process being killed during the write

    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'params': {'w': torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)['params']['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net_g_latest.pth']


def test_derain_models_own_train_options_are_known(toy_data):
    from dsmnet_arch.checks import OptionsError, check_options

    opt = train_options(toy_data, amp='bf16', compile=False, nonfinite_loss='skip', bf16=True)
    assert check_options(opt) == []
    opt['train']['amps'] = 'bf16'
    with pytest.raises(OptionsError, match='Option train:amps is not read by BasicSR; did you mean train:amp?'):
        check_options(opt)
