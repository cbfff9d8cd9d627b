"""The demo end to end, shortened to seconds: make data -> train -> test -> report, then again.

The options are the shipped demo files, loaded and cut down (a narrow 2-level network, a few
iterations on a few crops); every step runs through the same programs scripts/demo.sh runs.
"""
import glob
import os
import re

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, load_script, run_entry, write_yaml

pytestmark = pytest.mark.slow  # the demo

TRAIN_PHOTOS = ('astronaut', 'coffee', 'motorcycle_left', 'camera', 'brick', 'grass', 'gravel', 'hubble_deep_field')
VAL_PHOTOS = ('chelsea', 'rocket')
SMALL_NET = dict(num_feat=8, num_levels=2, num_subspaces=4)


def shortened_options(tmp_path):
    """The shipped demo options with a small network and 4 iterations; returns the two yml paths."""
    with open(os.path.join(REPO, 'options', 'train_DSMNet_demo.yml')) as f:
        train = yaml.safe_load(f)
    with open(os.path.join(REPO, 'options', 'test_DSMNet_demo.yml')) as f:
        test = yaml.safe_load(f)
    for opt in (train, test):
        opt['network_g'].update(SMALL_NET)
    train['train'].update(total_iter=4)
    train['train']['scheduler']['milestones'] = [2, 3]
    train['datasets']['train'].update(batch_size_per_gpu=2, gt_size=32)
    train['val']['val_freq'] = 8  # only the validation BasicSR runs after training
    train['logger'].update(print_freq=1, save_checkpoint_freq=4)
    return (write_yaml(tmp_path / 'train_DSMNet_demo.yml', train), write_yaml(tmp_path / 'test_DSMNet_demo.yml', test),
            train, test)


def y_psnr(img, ref):
    """PSNR on the Y channel (ITU-R BT.601, as MATLAB's rgb2ycbcr) of two BGR uint8 images, numpy only."""
    weights = np.array([24.966, 128.553, 65.481]) / 255  # B, G, R
    y_img, y_ref = (a.astype(np.float64) @ weights + 16 for a in (img, ref))
    return 10 * np.log10(255**2 / np.mean((y_img - y_ref)**2))


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_demo_data_layout_and_reuse(tmp_path, capsys):
    args = [os.path.join(REPO, 'scripts', 'make_demo_data.py'), '--dst', 'demo_data', '--crop_size', '48',
            '--crops_per_photo', '2']
    out = check(run_entry(args, cwd=str(tmp_path)))
    assert 'wrote 16 training and 2 validation pairs' in out
    root = tmp_path / 'demo_data'
    for split, count in (('train', 16), ('val', 2)):
        inputs, targets = (sorted(os.listdir(root / split / side)) for side in ('input', 'target'))
        assert inputs == targets and len(inputs) == count
    train_names = os.listdir(root / 'train' / 'input')
    assert {re.sub(r'_\d{3}\.png$', '', n) for n in train_names} == set(TRAIN_PHOTOS)
    assert sorted(os.listdir(root / 'val' / 'input')) == [f'{p}.png' for p in VAL_PHOTOS]
    for split, name in (('train', 'astronaut_000.png'), ('val', 'chelsea.png')):
        rainy = cv2.imread(str(root / split / 'input' / name)).astype(int)
        clean = cv2.imread(str(root / split / 'target' / name)).astype(int)
        assert (rainy >= clean).all() and (rainy > clean).mean() > 0.05  # rain only adds, and there is rain
    assert cv2.imread(str(root / 'train' / 'target' / 'astronaut_000.png')).shape == (48, 48, 3)

    # the same configuration again reuses the files; another one rebuilds them (in-process calls)
    make_demo_data = load_script('make_demo_data').make_demo_data
    stamp = os.path.getmtime(root / 'val' / 'input' / 'chelsea.png')
    assert make_demo_data(str(root), crop_size=48, crops_per_photo=2) is False
    assert 'reusing 18 pairs' in capsys.readouterr().out
    assert os.path.getmtime(root / 'val' / 'input' / 'chelsea.png') == stamp
    os.remove(root / 'train' / 'input' / 'coffee_001.png')  # an incomplete folder is rebuilt
    assert make_demo_data(str(root), crop_size=48, crops_per_photo=2) is True
    assert os.path.isfile(root / 'train' / 'input' / 'coffee_001.png')
    assert make_demo_data(str(root), crop_size=48, crops_per_photo=1) is True
    assert len(os.listdir(root / 'train' / 'input')) == 8
    # a folder the script did not make is left alone
    (tmp_path / 'other' / 'train').mkdir(parents=True)
    with pytest.raises(SystemExit, match='was not made by this script'):
        make_demo_data(str(tmp_path / 'other'))


def test_shortened_demo_end_to_end_twice(tmp_path):
    work = str(tmp_path)
    train_yml, test_yml, train_opt, test_opt = shortened_options(tmp_path)
    make_data = [os.path.join(REPO, 'scripts', 'make_demo_data.py'), '--dst', 'demo_data', '--crop_size', '48',
                 '--crops_per_photo', '1']
    train = [os.path.join(REPO, 'dsmnet_arch', 'train.py'), '-opt', train_yml]
    test = [os.path.join(REPO, 'dsmnet_arch', 'test.py'), '-opt', test_yml]
    report = [os.path.join(REPO, 'scripts', 'demo_report.py'), '--train_opt', train_yml, '--test_opt', test_yml]
    exp_name, res_name = train_opt['name'], test_opt['name']
    assert test_opt['path']['pretrain_network_g'] == f'experiments/{exp_name}/models/net_g_latest.pth'

    check(run_entry(make_data, cwd=work))
    check(run_entry(train, cwd=work))
    assert os.path.isfile(os.path.join(work, 'experiments', exp_name, 'models', 'net_g_latest.pth'))
    assert glob.glob(os.path.join(work, 'tb_logger', exp_name, 'events.out.tfevents.*'))
    check(run_entry(test, cwd=work))
    visualization = os.path.join(work, 'results', res_name, 'visualization', 'demo_val')
    assert sorted(os.listdir(visualization)) == [f'{p}_{res_name}.png' for p in VAL_PHOTOS]
    out = check(run_entry(report, cwd=work))

    # the table: rainy PSNR-Y against an independent numpy computation, derained against BasicSR's test log
    val = os.path.join(work, 'demo_data', 'val')
    rainy_psnr = [
        y_psnr(cv2.imread(os.path.join(val, 'input', f'{p}.png')), cv2.imread(os.path.join(val, 'target', f'{p}.png')))
        for p in VAL_PHOTOS
    ]
    rows = dict(re.findall(r'^(mean \(2 images\): \w+)\s+([\d.]+)', out, re.M))
    assert float(rows['mean (2 images): rainy']) == pytest.approx(np.mean(rainy_psnr), abs=0.01)
    test_log = open(glob.glob(os.path.join(work, 'results', res_name, 'test_*.log'))[0]).read()
    logged = float(re.search(r'# psnr_y: ([\d.]+)', test_log).group(1))
    assert float(rows['mean (2 images): derained']) == pytest.approx(logged, abs=0.01)
    assert 'PSNR-Y gain:' in out and 'SSIM-RGB' in out
    for line in ('comparison images', 'trained weights', 'tensorboard log'):
        assert line in out
    assert f"experiments/{exp_name}/models/net_g_latest.pth" in out and f'tb_logger/{exp_name}' in out

    # comparison images: rainy | derained | clean, each with a caption strip, 4-pixel gaps
    for photo in VAL_PHOTOS:
        clean = cv2.imread(os.path.join(val, 'target', f'{photo}.png'))
        derained = cv2.imread(os.path.join(visualization, f'{photo}_{res_name}.png'))
        side = cv2.imread(os.path.join(work, 'results', res_name, 'comparison', f'{photo}.png'))
        height, width = clean.shape[:2]
        assert side.shape == (height + 28, 3 * width + 8, 3)
        np.testing.assert_array_equal(side[28:, width + 4:2 * width + 4], derained)
        np.testing.assert_array_equal(side[28:, 2 * width + 8:], clean)

    # a second run (data reuse: see above) keeps the first run's outputs under *_archived_<time>
    check(run_entry(train, cwd=work))
    check(run_entry(test, cwd=work))
    for folder, name, inside in (('experiments', exp_name, 'models/net_g_latest.pth'),
                                 ('tb_logger', exp_name, 'events.out.tfevents.*'),
                                 ('results', res_name, 'comparison/chelsea.png')):
        archived = glob.glob(os.path.join(work, folder, f'{name}_archived_*', inside))
        assert len(archived) == 1, (folder, os.listdir(os.path.join(work, folder)))
    assert os.path.isfile(os.path.join(work, 'experiments', exp_name, 'models', 'net_g_latest.pth'))
    assert len(os.listdir(visualization)) == 2
