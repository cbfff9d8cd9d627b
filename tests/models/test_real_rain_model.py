"""RealRainModel: real rain without clean images, in BasicSR's test pipeline in this process (the run through
dsmnet_arch/test.py: tests/end_to_end/test_real_rain.py; the comparison sheet: tests/scripts/test_compare_grid.py).

NIQE needs at least two 96 x 96 blocks, so the photos here are 96 x 192 (smooth noise, on which
BasicSR's NIQE is finite); the network is a tiny random-weight DSMNet.
"""
import os

import pytest
import torch
import yaml

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import ARCH_KEY, arch_record

import basicsr.test
from basicsr.models import build_model

from conftest import REPO, real_rain_options, run_basicsr, write_photos


def test_a_photo_too_small_for_niqe_or_a_stray_file_is_a_one_line_error_naming_it(tmp_path, monkeypatch, capsys):
    photos = write_photos(tmp_path / 'photos', [(96, 192), (64, 64)])
    opt = real_rain_options(tmp_path, photos)
    with pytest.raises(SystemExit, match='1'):
        run_basicsr(basicsr.test, opt, tmp_path, monkeypatch)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f'error: val:metrics:niqe cannot score {photos / "photo1.png"} (64x64): ')
    assert error.endswith('(NIQE needs at least two 96x96 blocks, e.g. 96x192)')

    (photos / 'photo1.png').unlink()
    (photos / 'notes.txt').write_text('not a photo')
    with pytest.raises(SystemExit, match='1'):
        run_basicsr(basicsr.test, opt, tmp_path, monkeypatch)
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
