"""dsmnet_arch.checks: bad options and bad data stop the run before training, with one line that names the key or
file; LMDBs whose keys do not pair; DerainModel's own train keys (sync_bn among them) are known."""
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from dsmnet_arch.checks import OptionsError, check_options

from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from conftest import run_train, train_options

pytestmark = pytest.mark.usefixtures('fresh_basicsr_logger')  # each in-process run needs its own logger


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
    status, err = run_train(monkeypatch, capsys, tmp_path, train_options(toy_data))
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
    status, err = run_train(monkeypatch, capsys, tmp_path, opt)
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
        status, err = run_train(monkeypatch, capsys, tmp_path, opt)
        line = err.strip().splitlines()[-1]
        assert status == 1 and line.startswith('error: ') and f'{name}.pth' in line, (name, err)
        assert 'Traceback' not in err
        assert not os.path.exists(tmp_path / 'experiments' / f'bad_{name}')  # refused before writing anything
    assert not os.path.exists(tmp_path / 'PWNED')


def test_derain_models_own_train_options_are_known(toy_data):
    from dsmnet_arch.checks import OptionsError, check_options

    opt = train_options(toy_data, amp='bf16', compile=False, nonfinite_loss='skip', bf16=True)
    assert check_options(opt) == []
    opt['train']['amps'] = 'bf16'
    with pytest.raises(OptionsError, match='Option train:amps is not read by BasicSR; did you mean train:amp?'):
        check_options(opt)


def lmdb_options(tmp_path, toy_data, target_keys=None):
    """Training options reading LMDBs of the toy pairs; ``target_keys`` renames the target side's keys."""
    for side in ('input', 'target'):
        folder = os.path.join(toy_data, 'train', side)
        names = sorted(os.listdir(folder))
        keys = [os.path.splitext(n)[0] for n in names]
        if side == 'target' and target_keys:
            keys = target_keys(keys)
        make_lmdb_from_imgs(folder, str(tmp_path / f'{side}.lmdb'), names, keys)
    opt = train_options(toy_data)
    opt['datasets']['train'].update(dataroot_lq=str(tmp_path / 'input.lmdb'), dataroot_gt=str(tmp_path / 'target.lmdb'),
                                    io_backend={'type': 'lmdb'})
    return opt


def test_lmdbs_whose_keys_do_not_pair_are_named(tmp_path, toy_data):
    (tmp_path / 'good').mkdir()
    check_options(lmdb_options(tmp_path / 'good', toy_data))  # the same LMDBs with matching keys pass
    opt = lmdb_options(tmp_path, toy_data, target_keys=lambda keys: keys[:-1] + ['renamed'])
    with pytest.raises(OptionsError) as err:
        check_options(opt)
    message = str(err.value)
    assert message == (f"Option datasets:train: 1 target(s) have no input (filename_tmpl '{{}}'), e.g. "
                       f"{tmp_path / 'target.lmdb' / 'renamed.png'} has no {tmp_path / 'input.lmdb' / 'renamed.png'}")


def test_a_malformed_lmdb_key_list_is_named_by_line(tmp_path, toy_data):
    opt = lmdb_options(tmp_path, toy_data)
    meta = tmp_path / 'input.lmdb' / 'meta_info.txt'
    lines = meta.read_text().splitlines()
    meta.write_text('\n'.join(lines[:1] + ['img001.png 32x32 no shape'] + lines[2:]) + '\n')
    with pytest.raises(OptionsError, match=f'{meta}:2: expected "name \\(h,w,c\\) level", got \'img001.png 32x32'):
        check_options(opt)


def test_the_options_check_knows_sync_bn(toy_data):
    assert check_options(train_options(toy_data, sync_bn=True)) == []
    with pytest.raises(OptionsError, match='Option train:syncbn is not read by BasicSR; did you mean train:sync_bn?'):
        check_options(train_options(toy_data, syncbn=True))
