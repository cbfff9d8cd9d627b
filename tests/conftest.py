"""Helpers shared by the test files: generated images and paired data, small networks and DerainModels, BasicSR
options and in-process pipelines, training scripts for subprocess runs, a BasicSR clone, the reproduction's data.

Test files import them with ``from conftest import ...`` (pytest.ini puts tests/ on sys.path), from any folder.
A helper that test files of more than one folder use lives here; test files of one folder may also import
from each other (tests/preparation/, tests/reproduction/).
"""
import copy
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
import yaml

import dsmnet_arch  # noqa: F401  (BasicSR fixes must run before any test imports basicsr)
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checks import run_pipeline

import basicsr
from basicsr.models import build_model
from basicsr.utils import logger as basicsr_logger

# Tiny tensors gain nothing from threads, and on a busy 2-core machine OpenMP threads that
# wait for each other make a forward pass tens of times slower. Subprocesses get the same.
torch.set_num_threads(1)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package), to call its functions."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'scripts', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_entry(args, cwd, env=None, timeout=600):
    """Run ``python <args>`` in ``cwd`` and return the completed process (output captured)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    full_env.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


# -------------------- Images and paired data

def write_pairs(folder, count, size=32, seed=0, prefix='img'):
    """Write ``count`` PNG pairs to ``folder/{input,target}`` with the same names on both sides.

    The target is a smooth random image; the input adds bright diagonal streaks to it, so a
    network can learn to remove them in a few steps.
    """
    rng = np.random.default_rng(seed)
    for sub in ('input', 'target'):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        base = rng.uniform(0.2, 0.7, (1, 1, 3)) + 0.1 * np.sin((xx + yy * rng.uniform(0.5, 2))[..., None] / 5)
        streaks = ((xx + 2 * yy + i) % 7 == 0)[..., None] * 0.3
        clean = np.clip(base, 0, 1)
        rainy = np.clip(clean + streaks, 0, 1)
        name = f'{prefix}{i:03d}.png'
        cv2.imwrite(os.path.join(folder, 'target', name), (clean * 255).round().astype(np.uint8))
        cv2.imwrite(os.path.join(folder, 'input', name), (rainy * 255).round().astype(np.uint8))
    return folder


def rainy_image(height=72, width=96, seed=0):
    """uint8 BGR: smooth colour planes with thin bright diagonal streaks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.3 * np.sin(xx / rng.uniform(3, 9) + yy / rng.uniform(4, 11) + c) for c in range(3)]
    img = np.stack(planes, -1) + 0.35 * (((xx + 3 * yy).astype(int) % 11) == 0)[..., None]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def smooth_image(height, width, channels=3, seed=0):
    """A float image in [0, 1] with smooth structure and thin bright streaks (like rain)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.3 * np.sin(xx / rng.uniform(3, 9) + yy / rng.uniform(4, 11) + c) for c in range(channels)]
    img = np.stack(planes, -1) + 0.3 * (((xx + 3 * yy).astype(int) % 9) == 0)[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def to_tensor(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def rainy_pair(size=32):
    """One clean image and the same image with bright diagonal streaks."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing='ij')
    clean = torch.stack([0.4 + 0.2 * torch.sin(xx / 4), 0.5 + 0.2 * torch.cos(yy / 5), 0.3 + 0.001 * xx * yy / 4])
    rainy = (clean + 0.4 * ((xx + 2 * yy) % 6 == 0)).clamp(0, 1)
    return rainy[None], clean[None]


def write_photos(folder, sizes, seed=0):
    """Smooth noise photos ``photo<i>.png`` of the given (h, w) sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f'photo{i}.png'),
                    cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 2))
    return folder


@pytest.fixture
def toy_data(tmp_path):
    """Four 32x32 training pairs and two validation pairs."""
    root = tmp_path / 'toy'
    write_pairs(str(root / 'train'), 4, seed=1)
    write_pairs(str(root / 'val'), 2, seed=2, prefix='val')
    return str(root)


# -------------------- Small networks and DerainModels built in the test process

def small_network(**overrides):
    """A DSMNet small enough to train for a few iterations in seconds on a CPU."""
    net = dict(type='DSMNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=2, num_subspaces=4)
    net.update(overrides)
    return net


#: A small DSMNet for DerainModels built in the test process.
NETWORK = dict(type='DSMNet', num_feat=8, num_levels=2, num_subspaces=4)  # ca+sa: 2 BatchNorm layers per CADB
#: An in-process DerainModel of NETWORK for train: sync_bn (tests/models/ and tests/end_to_end/test_distributed.py).
SYNC_BN_OPT = dict(name='sync_bn', model_type='DerainModel', scale=1, is_train=True, network_g=NETWORK,
                   path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
                   train=dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999]),
                              scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                              pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2)))
#: The arguments of a small DSMNet, and one built from a seed.
TINY = dict(num_feat=8, num_levels=2, num_subspaces=4)


def tiny(seed):
    torch.manual_seed(seed)
    return DSMNet(**TINY)


def small_dsmnet(seed=0, **overrides):
    """tiny(seed) in eval mode, with other arguments: a DSMNet fast enough for many small runs."""
    torch.manual_seed(seed)
    return DSMNet(**{**TINY, **overrides}).eval()


def randomised(net):
    """Non-trivial BatchNorm parameters and statistics, so that every term matters."""
    g = torch.Generator().manual_seed(1)
    for name, t in net.state_dict().items():
        if 'bn_' in name and t.is_floating_point():
            t.copy_(torch.rand(t.shape, generator=g) + 0.5 if 'var' in name or 'weight' in name else
                    torch.randn(t.shape, generator=g) * 0.3)
    return net


def channels_last_by_block(net, x):
    """{block name: whether its output is channels-last} for one forward pass of ``net`` on ``x``.

    Outputs of one channel or one pixel are both layouts at once and are left out.
    """
    formats = {}

    def check(name, out):
        if out.shape[1] > 1 and out.shape[-1] * out.shape[-2] > 1:
            formats[name] = out.stride() == torch.empty(out.shape, memory_format=torch.channels_last).stride()

    hooks = [module.register_forward_hook(lambda m, args, out, name=name: check(name, out))
             for name, module in net.named_modules() if name]
    try:
        net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return formats


def derain_model(num_gpu=0, training_states=None, network=NETWORK, **train_options):
    """A DerainModel with a small DSMNet (``network``) and Adam, built as BasicSR's trainer builds it (the tests of
    mixed precision, compile and the training step, and the GPU suite)."""
    train = dict(optim_g=dict(type='Adam', lr=5e-3, betas=[0.9, 0.999]),
                 scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                 pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2), **train_options)
    opt = dict(name='amp', model_type='DerainModel', scale=1, num_gpu=num_gpu, is_train=True, dist=False,
               network_g=dict(network), train=train,
               path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None,
                         training_states=training_states))
    torch.manual_seed(0)
    return build_model(opt)


def batch(device='cpu'):
    rainy, clean = rainy_pair(size=32)
    return {'lq': torch.cat([rainy, rainy.flip(-1)]).to(device), 'gt': torch.cat([clean, clean.flip(-1)]).to(device)}


# -------------------- BasicSR options, and BasicSR's pipelines in the test process

def paired_dataset(name, root, phase):
    opt = dict(name=name, type='PairedImageDataset', dataroot_gt=os.path.join(root, 'target'),
               dataroot_lq=os.path.join(root, 'input'), filename_tmpl='{}', io_backend=dict(type='disk'))
    if phase == 'train':
        opt.update(gt_size=16, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
    return opt


METRICS = {
    'psnr_y': dict(type='calculate_psnr', crop_border=0, test_y_channel=True),
    'ssim_rgb': dict(type='calculate_ssim', crop_border=0, test_y_channel=False),
}


def train_options(data_root, name='cycle', total_iter=4, num_gpu=0, **train_overrides):
    """Options for a tiny DerainModel run on the pairs under ``data_root/{train,val}``."""
    train = dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999]),
                 scheduler=dict(type='MultiStepLR', milestones=[total_iter // 2], gamma=0.5),
                 total_iter=total_iter, warmup_iter=-1,
                 pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2))
    train.update(train_overrides)
    return dict(
        name=name, model_type='DerainModel', scale=1, num_gpu=num_gpu, manual_seed=10,
        datasets=dict(train=paired_dataset('toy_train', os.path.join(data_root, 'train'), 'train'),
                      val=paired_dataset('toy_val', os.path.join(data_root, 'val'), 'val')),
        network_g=small_network(),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=train,
        val=dict(val_freq=2, save_img=False, metrics=copy.deepcopy(METRICS)),
        logger=dict(print_freq=1, save_checkpoint_freq=2, use_tb_logger=True, wandb=dict(project=None)),
        dist_params=dict(backend='nccl', port=29500),
    )


def eval_options(data_root, weights, name='cycle_test', num_gpu=0):
    return dict(
        name=name, model_type='DerainModel', scale=1, num_gpu=num_gpu, manual_seed=10,
        datasets=dict(test_1=paired_dataset('toy_test', os.path.join(data_root, 'val'), 'test')),
        network_g=small_network(),
        path=dict(pretrain_network_g=weights, strict_load_g=True, param_key_g='params'),
        val=dict(save_img=True, suffix=None, metrics=copy.deepcopy(METRICS)),
    )


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


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def reset_basicsr_logger():
    """BasicSR's logger as a new process finds it: ``get_root_logger`` sets it up (handlers, and level INFO with a
    log file) on its first call in a process only, and a first call by a model built in a test sets no level."""
    log = logging.getLogger('basicsr')
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.clear()


@pytest.fixture
def fresh_basicsr_logger():
    """BasicSR sets its logger up once per process; each in-process run here needs its own."""
    yield
    reset_basicsr_logger()


def run_basicsr(module, opt, tmp_path, monkeypatch):
    """Run BasicSR's train or test pipeline as ``dsmnet_arch/{train,test}.py`` does, in ``tmp_path``.

    Returns what BasicSR logged (its logger does not propagate, and opens its log file once per
    process). The logger starts afresh, as in the process of a run: after a model built earlier in
    the test process, a pipeline would otherwise log nothing below WARNING.
    """
    reset_basicsr_logger()
    yml = tmp_path / 'options.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    parse_options = module.parse_options
    monkeypatch.setattr(module, 'parse_options', parse_options)  # run_pipeline wraps it while it runs
    monkeypatch.setattr(sys, 'argv', ['dsmnet', '-opt', str(yml)])
    monkeypatch.chdir(tmp_path)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    try:
        run_pipeline(module)
    finally:
        logger.removeHandler(handler)
    assert module.parse_options is parse_options  # and restores it
    return stream.getvalue()


def run_train(monkeypatch, capsys, tmp_path, opt, *extra_args):
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


# -------------------- Training scripts for subprocess runs (torchrun)

_POISONED_TRAINING = '''
import os, sys
import torch
import dsmnet_arch
from dsmnet_arch.models.derain_model import DerainModel

step = DerainModel.optimize_parameters
model = []


def optimize_parameters(self, current_iter):
    undo = []
{poison}
    try:
        step(self, current_iter)
    finally:
        for action in undo:
            action()
    model.append(self)


DerainModel.optimize_parameters = optimize_parameters
sys.argv[0] = 'train.py'
from dsmnet_arch.train import main
main()
net = model[0].get_bare_model(model[0].net_g)
torch.save({{k: v.detach() for k, v in net.named_parameters()}}, f'rank{{os.environ["RANK"]}}.pth')
'''


def poisoned_training_script(poison):
    """The text of a ``train.py`` for distributed tests: ``poison`` (code with ``self``, ``current_iter``,
    ``os`` and a list ``undo`` of callables run after the step in scope) runs before every DerainModel step;
    at the end each process saves its network's parameters as ``rank<RANK>.pth``."""
    return _POISONED_TRAINING.format(poison=textwrap.indent(textwrap.dedent(poison).strip(), ' ' * 4))


# Runs dsmnet_arch.train under torchrun and records, per rank, what the run did: the training
# samples it fed, how often it saved and validated, and its final weights.
RECORDER = textwrap.dedent('''
    import json, os, sys
    import torch
    import dsmnet_arch
    from dsmnet_arch.models import derain_model
    from dsmnet_arch.models.derain_model import DerainModel

    record = {'samples': [], 'saves': 0, 'validations': 0}
    model = []
    feed, step, validate, save = (DerainModel.feed_data, DerainModel.optimize_parameters,
                                  DerainModel.nondist_validation, derain_model.atomic_save)

    def feed_data(self, data):
        self.recorded_paths = list(data['lq_path'])
        feed(self, data)

    def optimize_parameters(self, current_iter):
        record['samples'].append([os.path.basename(p) for p in self.recorded_paths])
        model[:] = [self]
        step(self, current_iter)

    def nondist_validation(self, *args, **kwargs):
        record['validations'] += 1
        validate(self, *args, **kwargs)

    def atomic_save(*args, **kwargs):
        record['saves'] += 1
        save(*args, **kwargs)

    DerainModel.feed_data, DerainModel.optimize_parameters = feed_data, optimize_parameters
    DerainModel.nondist_validation, derain_model.atomic_save = nondist_validation, atomic_save
    sys.argv[0] = 'train.py'
    from dsmnet_arch.train import main
    main()
    rank = int(os.environ['RANK'])
    net = model[0].get_bare_model(model[0].net_g)
    torch.save({k: v.detach() for k, v in net.named_parameters()}, f'rank{rank}.pth')
    record['backend'] = torch.distributed.get_backend()
    json.dump(record, open(f'rank{rank}.json', 'w'))
''')


# -------------------- A BasicSR clone (tests/test_link_basicsr.py, tests/end_to_end/test_basicsr_clone.py)

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


# -------------------- The paper's reproduction (tests/reproduction/, tests/end_to_end/test_reproduce_paper.py)

# Its script, the size of the images of the tiny downloads, the overrides that make every experiment small, and
# how many experiments there are.
REPRODUCE_SCRIPT = os.path.join(REPO, 'scripts', 'reproduce_paper.py')
DOWNLOAD_H, DOWNLOAD_W = 40, 48
REPRODUCE_SMALL = ['--override', 'network_g:num_feat=16', '--override', 'network_g:num_levels=2',
                   '--override', 'datasets:train:gt_size=32', '--override', 'datasets:train:num_worker_per_gpu=0',
                   '--override', 'logger:use_tb_logger=false', '--override', 'val:save_img=false']
REPRODUCE_EXPERIMENTS = 15  # Table 2: 4; Table 3: 5 more; Table 4: 2 more; Table 5: 4 more (default model shared)


def download_pair(seed, h=DOWNLOAD_H, w=DOWNLOAD_W):
    """A smooth clean image and the same with bright diagonal streaks (uint8 BGR)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    clean = rng.uniform(0.2, 0.7, (1, 1, 3)) + 0.1 * np.sin((xx + yy * rng.uniform(0.5, 2))[..., None] / 5)
    rainy = clean + ((xx + 2 * yy + seed) % 7 == 0)[..., None] * 0.3
    return [(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in (clean, rainy)]


def save_image(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
