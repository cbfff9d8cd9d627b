"""Every shipped options file: the paper's settings, and a real BasicSR run on a small prepared tree.

Each file's dataroots are pointed at a tree written by the preparation script (so they must
name the layout it writes: ``datasets/<set>/<split>/{input,target}[.lmdb]``, Rain13K's test sets
under ``test/<set>/``). Training files run one iteration, a validation and a checkpoint through
``dsmnet_arch.train``'s pipeline; test files load weights and write images and metrics through
``dsmnet_arch.test``'s. Batch size, iterations and loggers are cut down; the network and the crop
size stay as shipped. The real-rain file derains a folder of photos and scores them with NIQE.
"""
import glob
import os
import re

import cv2
import numpy as np
import pytest
import torch
import yaml

from dsmnet_arch.metrics.protocol_metrics import PROTOCOLS
from dsmnet_arch.models.divergence_guard import GUARD_DEFAULTS, guard_options
from dsmnet_arch.preparation import LAYOUTS, prepare_dataset

import basicsr.test
import basicsr.train
from basicsr.metrics import calculate_metric, calculate_niqe

from conftest import REPO, run_basicsr, write_pairs

REAL_RAIN = os.path.join(REPO, 'options', 'test_DSMNet_RealRain.yml')
FILES = sorted(f for f in glob.glob(os.path.join(REPO, 'options', '*_DSMNet_*.yml'))
               if not f.endswith('_demo.yml') and f != REAL_RAIN)
TRAIN = [f for f in FILES if os.path.basename(f).startswith('train_')]
TEST = [f for f in FILES if os.path.basename(f).startswith('test_')]
# Epochs of each training file (docs/datasets.md); SPA-Data's count differs between releases, so its
# file fixes the iterations instead.
EPOCHS = {'Rain100L': 200, 'Rain100H': 200, 'Rain800': 100, 'Rain1400': 100, 'Rain13K': 100, 'Rain200L': 200,
          'Rain200H': 200, 'DID-Data': 100, 'SPA-Data': None}
ITERATIONS = {'SPA-Data': 300000}
RAIN13K_SETS = LAYOUTS['Rain13K'].test_sets
METRICS = {'psnr_y': ('calculate_psnr', True), 'ssim_y': ('calculate_ssim', True),
           'psnr_rgb': ('calculate_psnr', False), 'ssim_rgb': ('calculate_ssim', False)}
# What the field's tables use for each set (docs/datasets.md, "Scoring as the published tables"); the
# paper's four sets: both families, as the paper does not say how it scored. Test files only.
FIELD_PROTOCOLS = {'Rain100L': ('restormer', 'rcdnet'), 'Rain100H': ('restormer', 'rcdnet'),
                   'Rain800': ('restormer', 'rcdnet'), 'Rain1400': ('restormer', 'rcdnet'), 'Rain13K': ('restormer', ),
                   'Rain200L': ('restormer', ), 'Rain200H': ('restormer', ), 'SPA-Data': ('restormer', ),
                   'DID-Data': ('rcdnet', )}


def expected_test_metrics(name):
    """``val:metrics`` of the test file of ``name``: the four of METRICS, then its protocols'."""
    metrics = {k: {'type': t, 'crop_border': 0, 'test_y_channel': y} for k, (t, y) in METRICS.items()}
    for protocol in FIELD_PROTOCOLS[name]:
        metrics.update({f'{m}_y_{protocol}': PROTOCOLS[protocol][m] for m in ('psnr', 'ssim')})
    return metrics


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def dataset_of(path):
    return re.fullmatch(r'(?:train|test)_DSMNet_([\w-]+?)(?:_lmdb)?\.yml', os.path.basename(path)).group(1)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """``<root>/{train,test,test/<Rain13K set>}/{input,target}`` and their LMDBs, written by the preparation step."""
    tmp = tmp_path_factory.mktemp('options')
    write_pairs(str(tmp / 'src' / 'train'), 3, size=64, seed=1)  # the files' 64 x 64 crop
    write_pairs(str(tmp / 'src' / 'test'), 2, size=16, seed=2, prefix='val')  # small: validation runs the full network
    sources = {'train': tmp / 'src' / 'train', 'test': tmp / 'src' / 'test'}
    sources.update({f'test/{name}': tmp / 'src' / 'test' for name in RAIN13K_SETS})
    prepare_dataset('Rain13K', sources, tmp / 'prepared', lmdb=True)
    return tmp / 'prepared'


def point_at(opt, name, root):
    """Replace ``datasets/<name>/`` in every dataroot by ``root``; return the dataroots' tails."""
    tails = []
    for dataset in opt['datasets'].values():
        for key in ('dataroot_lq', 'dataroot_gt'):
            assert dataset[key].startswith(f'datasets/{name}/'), dataset[key]
            tail = dataset[key][len(f'datasets/{name}/'):]
            dataset[key] = str(root / tail)
            tails.append(tail)
    return tails


def test_every_file_is_covered():
    assert len(TRAIN) >= 18 and len(TEST) >= 9
    for name in EPOCHS:
        for stem in (f'train_DSMNet_{name}', f'train_DSMNet_{name}_lmdb', f'test_DSMNet_{name}'):
            assert os.path.join(REPO, 'options', f'{stem}.yml') in FILES
    assert {dataset_of(f) for f in FILES} == set(EPOCHS) == set(LAYOUTS) == set(FIELD_PROTOCOLS)


@pytest.mark.parametrize('path', TRAIN, ids=os.path.basename)
def test_training_file_has_the_paper_settings(path):
    opt, name = load(path), dataset_of(path)
    train_set = opt['datasets']['train']
    assert (opt['model_type'], opt['scale'], opt['num_gpu']) == ('DerainModel', 1, 'auto')
    assert (train_set['gt_size'], train_set['use_hflip'], train_set['use_rot']) == (64, True, False)
    assert train_set['batch_size_per_gpu'] == 32
    assert opt['train']['optim_g'] == {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.999]}
    assert opt['train']['pixel_opt'] == {'type': 'MSESSIMLoss', 'loss_weight': 1.0, 'ssim_weight': 0.2}
    # epochs -> iterations, as the file's comment says: pairs x ratio / batch x epochs
    pairs, ratio, epochs = LAYOUTS[name].paper_pairs.get('train'), train_set['dataset_enlarge_ratio'], EPOCHS[name]
    total = opt['train']['total_iter']
    text = open(path).read()
    if epochs is None:
        assert total == ITERATIONS[name] and f'total_iter: {total}' in text and ratio == 1
    else:
        assert total == pairs * ratio * epochs // 32 and pairs * ratio * epochs % 32 == 0
        assert re.search(rf'#\s+{pairs}\s+x\s+{ratio}\s+/\s+32\s+x\s+{epochs}\s+=\s+{total:,}\n', text)
    milestones = [total // 2, total * 3 // 4]
    assert opt['train']['scheduler'] == {'type': 'MultiStepLR', 'milestones': milestones, 'gamma': 0.5}
    assert {k: (v['type'], v['test_y_channel'], v['crop_border']) for k, v in opt['val']['metrics'].items()} == {
        k: (t, y, 0) for k, (t, y) in METRICS.items()}
    assert opt['val']['val_freq'] == opt['logger']['save_checkpoint_freq'] and total % opt['val']['val_freq'] == 0


@pytest.mark.parametrize('name', list(EPOCHS))
def test_lmdb_variant_differs_only_in_reading_lmdb(name):
    disk = load(os.path.join(REPO, 'options', f'train_DSMNet_{name}.yml'))
    lmdb = load(os.path.join(REPO, 'options', f'train_DSMNet_{name}_lmdb.yml'))
    for phase in ('train', 'val'):
        assert lmdb['datasets'][phase]['io_backend'] == {'type': 'lmdb'}
        assert disk['datasets'][phase]['io_backend'] == {'type': 'disk'}
        for key in ('dataroot_lq', 'dataroot_gt'):
            assert lmdb['datasets'][phase][key] == disk['datasets'][phase][key] + '.lmdb'
            del lmdb['datasets'][phase][key], disk['datasets'][phase][key]
        del lmdb['datasets'][phase]['io_backend'], disk['datasets'][phase]['io_backend']
    assert lmdb == disk  # same experiment name, so the test file finds either run's weights


@pytest.mark.parametrize('path', TRAIN, ids=os.path.basename)
def test_training_file_runs_one_iteration(path, tree, tmp_path, monkeypatch, capsys):
    opt, name = load(path), dataset_of(path)
    tails = point_at(opt, name, tree)
    suffix = '.lmdb' if opt['datasets']['train']['io_backend']['type'] == 'lmdb' else ''
    val = 'test/Rain100L' if name == 'Rain13K' else 'test'  # Rain13K validates on Rain100L, as MPRNet and Restormer
    assert tails == [f'train/input{suffix}', f'train/target{suffix}', f'{val}/input{suffix}', f'{val}/target{suffix}']
    opt['datasets']['train'].update(batch_size_per_gpu=1, num_worker_per_gpu=0)
    opt['train']['total_iter'] = 1
    opt['logger'].update(print_freq=1, save_checkpoint_freq=1, use_tb_logger=False)
    opt['val']['val_freq'] = 2  # validate once, after training
    log = run_basicsr(basicsr.train, opt, tmp_path, monkeypatch)
    assert 'warning' not in capsys.readouterr().err  # the options check knows every key

    models = tmp_path / 'experiments' / opt['name'] / 'models'
    assert sorted(os.listdir(models)) == ['net_g_1.pth', 'net_g_latest.pth']
    assert (tmp_path / 'experiments' / opt['name'] / 'training_states' / '1.state').is_file()
    ratio = opt['datasets']['train']['dataset_enlarge_ratio']
    assert 'Number of train images: 3' in log and f'Dataset enlarge ratio: {ratio}' in log
    assert re.search(r'iter:\s+1, lr:\(1\.000e-03,\)', log) and 'l_pix:' in log
    for metric in METRICS:
        assert re.search(rf'# {metric}: \d+\.\d+', log), metric


@pytest.mark.parametrize('path', TEST, ids=os.path.basename)
def test_test_file_loads_weights_and_writes_images_and_metrics(path, tree, tmp_path, monkeypatch):
    from basicsr.utils.registry import ARCH_REGISTRY

    opt, name = load(path), dataset_of(path)
    train_opt = load(os.path.join(REPO, 'options', f'train_DSMNet_{name}.yml'))
    assert opt['network_g'] == train_opt['network_g']
    weights = opt['path']['pretrain_network_g']
    assert weights == f'experiments/{train_opt["name"]}/models/net_g_latest.pth'  # where training leaves it
    assert opt['val']['metrics'] == expected_test_metrics(name)
    sets = {dataset['name']: os.path.dirname(dataset['dataroot_lq'])[len(f'datasets/{name}/'):]
            for dataset in opt['datasets'].values()}
    assert sets == ({s: f'test/{s}' for s in RAIN13K_SETS} if name == 'Rain13K' else {name: 'test'})
    assert point_at(opt, name, tree) == [f'{root}/{side}' for root in sets.values() for side in ('input', 'target')]

    net_opt = dict(opt['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    os.makedirs(tmp_path / os.path.dirname(weights))
    torch.save({'params': net.state_dict()}, tmp_path / weights)
    log = run_basicsr(basicsr.test, opt, tmp_path, monkeypatch)

    assert f'Loading DSMNet model from {weights}' in log
    for set_name in sets:
        images = tmp_path / 'results' / opt['name'] / 'visualization' / set_name
        assert sorted(os.listdir(images)) == [f'val000_{opt["name"]}.png', f'val001_{opt["name"]}.png']
        block = log[log.index(f'Validation {set_name}\n'):]
        block = block[:block.index('\n\n')]  # the lines of this set's validation
        for metric in expected_test_metrics(name):
            assert re.search(rf'\t # {metric}: \d+\.\d+', block), (set_name, metric)


@pytest.mark.parametrize('path', TEST, ids=os.path.basename)
def test_test_file_reports_the_fields_protocols_and_its_metrics_build(path):
    opt, name = load(path), dataset_of(path)
    assert opt['val']['metrics'] == expected_test_metrics(name)  # named psnr_y_<protocol>: the log says which
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    img2 = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    for key, metric_opt in opt['val']['metrics'].items():
        assert 0.5 < calculate_metric({'img': img, 'img2': img2}, metric_opt) < 40, key


def test_real_rain_file_derains_a_folder_of_photos_and_scores_input_and_output_with_niqe(tmp_path, monkeypatch, capsys):
    from basicsr.utils.registry import ARCH_REGISTRY

    opt = load(REAL_RAIN)
    assert (opt['model_type'], opt['network_g']) == ('RealRainModel', load(TEST[0])['network_g'])
    assert opt['datasets']['test_1']['dataroot_lq'] == 'datasets/RealRain'
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # NIQE needs two 96 x 96 blocks
        cv2.imwrite(str(photos / f'photo{i}.png'),
                    cv2.GaussianBlur(rng.integers(0, 256, (96, 192, 3)).astype(np.uint8), (5, 5), 2))
    opt['datasets']['test_1']['dataroot_lq'] = str(photos)
    weights = opt['path']['pretrain_network_g']
    net_opt = dict(opt['network_g'])
    os.makedirs(tmp_path / os.path.dirname(weights))
    torch.save({'params': ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt).state_dict()}, tmp_path / weights)
    log = run_basicsr(basicsr.test, opt, tmp_path, monkeypatch)
    assert 'warning' not in capsys.readouterr().err  # the options check knows every key

    results = tmp_path / 'results' / opt['name'] / 'visualization'
    outputs = [results / 'RealRain' / f'photo{i}_{opt["name"]}.png' for i in range(2)]
    assert sorted(os.listdir(results / 'RealRain')) == [p.name for p in outputs]
    expected = {'niqe_input': [calculate_niqe(cv2.imread(str(photos / f'photo{i}.png')), 0) for i in range(2)],
                'niqe': [calculate_niqe(cv2.imread(str(p)), 0) for p in outputs]}
    found = dict(re.findall(r'\t # (niqe\w*): (\d+\.\d+)', log))
    assert found.keys() == expected.keys()
    for metric, scores in expected.items():
        assert float(found[metric]) == pytest.approx(np.mean(scores), abs=1e-4), metric
    rows = (results / 'RealRain_scores.csv').read_text().splitlines()
    assert rows[0] == 'image,niqe_input,niqe'
    for i, row in enumerate(rows[1:]):
        name, *values = row.split(',')
        assert name == f'photo{i}'
        assert [float(v) for v in values] == pytest.approx([expected['niqe_input'][i], expected['niqe'][i]], abs=1e-5)


def test_every_training_options_file_scales_the_mab_branch_clips_and_guards():
    import yaml

    from conftest import REPO

    files = sorted(glob.glob(os.path.join(REPO, 'options', 'train_*.yml')))
    assert len(files) == 19
    for path in files:
        with open(path) as f:
            opt = yaml.safe_load(f)
        train = opt['train']
        assert opt['network_g']['res_scale'] == 0.1, path
        assert train['grad_clip_norm'] == 0.1, path
        assert guard_options(train['guard']) == {**GUARD_DEFAULTS, 'lr_factor': 0.5}, path
        assert 'nonfinite_loss' not in train, path  # the guard handles non-finite losses
