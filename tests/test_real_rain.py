"""Real rain without clean images: RealRainModel through dsmnet_arch/test.py, and the comparison sheet.

NIQE needs at least two 96 x 96 blocks, so the photos here are 96 x 192 (smooth noise, on which
BasicSR's NIQE is finite); the network is a tiny random-weight DSMNet.
"""
import os
import re

import cv2
import numpy as np
import pytest
import torch
import yaml

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import ARCH_KEY, arch_record

import basicsr.test
from basicsr.metrics import calculate_niqe
from basicsr.models import build_model

from conftest import REPO, load_script, run_entry, small_network, write_yaml
from test_options import run


def write_photos(folder, sizes, seed=0):
    """Smooth noise photos ``photo<i>.png`` of the given (h, w) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f'photo{i}.png'),
                    cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 2))
    return folder


def real_rain_options(tmp_path, photos):
    """Options of a RealRainModel test run on ``photos`` with a tiny random-weight DSMNet saved under ``tmp_path``."""
    net = small_network()
    args = {k: v for k, v in net.items() if k != 'type'}
    weights = tmp_path / 'weights' / 'net_g.pth'
    weights.parent.mkdir()
    torch.save({'params': DSMNet(**args).state_dict()}, weights)
    return dict(name='real', model_type='RealRainModel', scale=1, num_gpu=0, manual_seed=0,
                datasets=dict(test_1=dict(name='photos', type='SingleImageDataset', dataroot_lq=str(photos),
                                          io_backend=dict(type='disk'))),
                network_g=net, path=dict(pretrain_network_g=str(weights), param_key_g='params', strict_load_g=True),
                val=dict(save_img=True, suffix=None, metrics=dict(niqe=dict(type='calculate_niqe', crop_border=0))))


def test_test_py_derains_a_folder_of_rainy_photos_and_logs_niqe_of_input_and_output(tmp_path):
    photos = write_photos(tmp_path / 'photos', [(96, 192), (192, 96), (192, 192)])
    yml = write_yaml(tmp_path / 'real.yml', real_rain_options(tmp_path, photos))
    proc = run_entry([os.path.join(REPO, 'dsmnet_arch', 'test.py'), '-opt', yml], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    derained = tmp_path / 'results' / 'real' / 'visualization' / 'photos'
    assert sorted(os.listdir(derained)) == [f'photo{i}_real.png' for i in range(3)]
    for i in range(3):  # the derained photo keeps the photo's size
        assert cv2.imread(str(derained / f'photo{i}_real.png')).shape == cv2.imread(str(photos / f'photo{i}.png')).shape
    log = open(next((tmp_path / 'results' / 'real').glob('test_real_*.log'))).read()
    scores = dict(re.findall(r'\t # (niqe\w*): (\d+\.\d+)', log))
    niqe_input = [calculate_niqe(cv2.imread(str(photos / f'photo{i}.png')), 0) for i in range(3)]
    niqe_output = [calculate_niqe(cv2.imread(str(derained / f'photo{i}_real.png')), 0) for i in range(3)]
    assert float(scores['niqe_input']) == pytest.approx(np.mean(niqe_input), abs=1e-4)
    assert float(scores['niqe']) == pytest.approx(np.mean(niqe_output), abs=1e-4)
    assert niqe_input != pytest.approx(niqe_output, abs=1e-3)  # two different images were scored
    rows = (tmp_path / 'results' / 'real' / 'visualization' / 'photos_scores.csv').read_text().splitlines()
    assert rows[0] == 'image,niqe_input,niqe' and [r.split(',')[0] for r in rows[1:]] == ['photo0', 'photo1', 'photo2']


def test_a_photo_too_small_for_niqe_or_a_stray_file_is_a_one_line_error_naming_it(tmp_path, monkeypatch, capsys):
    photos = write_photos(tmp_path / 'photos', [(96, 192), (64, 64)])
    opt = real_rain_options(tmp_path, photos)
    with pytest.raises(SystemExit, match='1'):
        run(basicsr.test, opt, tmp_path, monkeypatch)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f'error: val:metrics:niqe cannot score {photos / "photo1.png"} (64x64): ')
    assert error.endswith('(NIQE needs at least two 96x96 blocks, e.g. 96x192)')

    (photos / 'photo1.png').unlink()
    (photos / 'notes.txt').write_text('not a photo')
    with pytest.raises(SystemExit, match='1'):
        run(basicsr.test, opt, tmp_path, monkeypatch)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f'error: Option datasets:test_1:dataroot_lq: {photos / "notes.txt"} is not an image file (allowed: '
        '.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp); move it out of the dataset folder')


def shipped(name):
    with open(os.path.join(REPO, 'options', f'{name}.yml')) as f:
        return yaml.safe_load(f)


def latest_weights(train_opt):
    """Where BasicSR's trainer, run from the current directory, writes the last weights of ``train_opt``."""
    return f'experiments/{train_opt["name"]}/models/net_g_latest.pth'


def test_real_rain_file_loads_the_rain100h_model_by_default_as_the_paper_tests_real_rain(tmp_path, monkeypatch):
    """The paper derains real photos with its Rain100H model: the shipped file loads, by default, the weights
    that options/train_DSMNet_Rain100H.yml writes (strictly, with the network recorded there), and documents
    the SPA-Data model's path as the alternative."""
    opt, rain100h = shipped('test_DSMNet_RealRain'), shipped('train_DSMNet_Rain100H')
    assert opt['path']['pretrain_network_g'] == latest_weights(rain100h)
    assert opt['path']['strict_load_g'] is True
    header = open(os.path.join(REPO, 'options', 'test_DSMNet_RealRain.yml')).read().split('\nname:')[0]
    assert f'path:pretrain_network_g={latest_weights(shipped("train_DSMNet_SPA-Data"))}' in header
    assert 'NIQE is ours' in header and 'Rain100H' in header

    # weights as a Rain100H training leaves them, under the directory the test runs in
    net_opt = dict(rain100h['network_g'])
    net = DSMNet(**{k: v for k, v in net_opt.items() if k != 'type'})
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.1, 0.1)
    weights = tmp_path / latest_weights(rain100h)
    weights.parent.mkdir(parents=True)
    torch.save({'params': net.state_dict(), ARCH_KEY: arch_record(net_opt, DSMNet)}, weights)
    monkeypatch.chdir(tmp_path)
    model = build_model(dict(opt, is_train=False, dist=False, rank=0, world_size=1, num_gpu=0))
    assert type(model).__name__ == 'RealRainModel'
    loaded = model.get_bare_model(model.net_g).state_dict()
    assert loaded.keys() == net.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def flat(value, h, w):
    return np.full((h, w, 3), value, np.uint8)


def test_comparison_sheet_puts_each_photo_beside_its_results(tmp_path, capsys):
    grid = load_script('compare_grid')
    sizes = {'1': (40, 80), '1_2': (80, 80), 'b': (60, 30)}  # '1_2' must not take the result of '1'
    for folder in ('rainy', 'derain', 'basicsr'):
        (tmp_path / folder).mkdir()
    for k, (stem, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(tmp_path / 'rainy' / f'{stem}.jpg'), flat(10 + k, h, w))
        cv2.imwrite(str(tmp_path / 'derain' / f'{stem}.png'), flat(100 + k, h, w))  # dsmnet-derain: the same name
        cv2.imwrite(str(tmp_path / 'basicsr' / f'{stem}_test_x.png'), flat(200 + k, h, w))  # BasicSR: <name>_<run>
    out = tmp_path / 'sheet' / 'grid.png'
    assert grid.main(['-o', str(out), '--rainy', str(tmp_path / 'rainy'), '--width', '40',
                      '--column', f'DSM-Net={tmp_path / "derain"}', '--column', f'BasicSR={tmp_path / "basicsr"}']) == 0
    sheet = cv2.imread(str(out))
    heights = [20, 40, 80]  # rows of '1', '1_2', 'b' (sorted) at width 40
    assert sheet.shape == (grid.LABEL_HEIGHT + sum(h + grid.GAP for h in heights), 3 * 40 + 2 * grid.GAP, 3)
    top = grid.LABEL_HEIGHT + grid.GAP
    for k, height in enumerate(heights):
        for column, base in enumerate((10, 100, 200)):
            cell = sheet[top:top + height, column * (40 + grid.GAP):column * (40 + grid.GAP) + 40]
            assert (cell == base + k).all(), (k, column)
        top += height + grid.GAP
    assert f'{out}: 128x184, 3 columns' in capsys.readouterr().out

    (tmp_path / 'basicsr' / 'b_test_x.png').unlink()
    assert grid.main(['-o', str(out), '--rainy', str(tmp_path / 'rainy'), '--column', f'B={tmp_path / "basicsr"}']) == 1
    assert capsys.readouterr().err.strip() == f'error: B: no result for b in {tmp_path / "basicsr"}'
