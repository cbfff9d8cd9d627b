"""The benchmark's data measurements: BasicSR's PairedImageDataset from PNG files and LMDB, and BasicSR's own
data time in a short training run."""
import contextlib
import glob
import io
import os
import re
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import torch
import yaml

from dsmnet_arch.benchmarks import REPO
from dsmnet_arch.benchmarks.timing import best_time

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.options import ordered_yaml


def write_pairs(folder, count, size, seed=0):
    """``count`` PNG pairs under ``folder/{input,target}``: smooth random photos, the input with streaks."""
    rng = np.random.default_rng(seed)
    height, width = size
    names = [f'{i:04d}.png' for i in range(count)]
    for sub in ('input', 'target'):
        os.makedirs(os.path.join(folder, sub))
    yy, xx = np.mgrid[0:height, 0:width]
    for i, name in enumerate(names):
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
        clean = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        clean += rng.normal(0, 4, clean.shape)  # sensor noise: PNG files of a realistic size
        rainy = clean + 80 * ((xx + 3 * yy + i) % 11 == 0)[..., None]
        cv2.imwrite(os.path.join(folder, 'target', name), np.clip(clean, 0, 255).astype(np.uint8))
        cv2.imwrite(os.path.join(folder, 'input', name), np.clip(rainy, 0, 255).astype(np.uint8))
    return names


def data_pipeline(cfg, device, precision, repeats):
    """Samples/s of one PairedImageDataset worker (paper crop and flips) from PNG files and from LMDB,
    and the data time of a short BasicSR training run on the LMDB (see :func:`basicsr_training`)."""
    rates = {}
    with tempfile.TemporaryDirectory() as root:
        names = write_pairs(root, cfg['pairs'], cfg['pair_size'])
        keys = [os.path.splitext(name)[0] for name in names]
        for sub in ('input', 'target'):
            quiet = io.StringIO()  # make_lmdb_from_imgs prints its progress
            with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                make_lmdb_from_imgs(os.path.join(root, sub), os.path.join(root, f'{sub}.lmdb'), names, keys)
        for backend, suffix in (('disk', ''), ('lmdb', '.lmdb')):
            dataset = PairedImageDataset(
                dict(dataroot_gt=os.path.join(root, 'target' + suffix),
                     dataroot_lq=os.path.join(root, 'input' + suffix),
                     io_backend=dict(type=backend), gt_size=cfg['patch'], use_hflip=True, use_rot=False, scale=1,
                     phase='train'))
            order = np.random.default_rng(0).integers(0, len(dataset), cfg['samples'])

            def load():
                for index in order:
                    dataset[int(index)]

            rates[backend] = cfg['samples'] / best_time(load, repeats, torch.device('cpu'))
        return rates, basicsr_training(cfg, device, precision, root)


LOG_LINE = re.compile(r'iter:\s*([\d,]+),.*time \(data\): ([\d.]+) \(([\d.]+)\)')


def basicsr_training(cfg, device, precision, root):
    """BasicSR's own data time: ``dsmnet_arch/train.py`` with the paper's LMDB options.

    Runs ``options/train_DSMNet_Rain100L_lmdb.yml`` with the preset's network width, batch and crop
    (the full preset's are the options' own), ``train: amp`` for a precision other than fp32, and the
    options' data-loader workers unless the preset names a number (the quick one: 1), on the LMDB in
    ``root`` for
    ``cfg['basicsr_iters']`` iterations without validation or checkpoints, logging every iteration,
    and reads the log. BasicSR logs running averages since the start, so the first iteration (the
    workers starting up) stays in them; the per-iteration times are recovered from the averages
    to give the share without it too. The run is the package's own training program, so it keeps
    freed memory whatever ``--system-malloc`` says.
    """
    with open(os.path.join(REPO, 'options', 'train_DSMNet_Rain100L_lmdb.yml')) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    iters = cfg['basicsr_iters']
    train = opt['datasets']['train']
    train.update(dataroot_gt=os.path.join(root, 'target.lmdb'), dataroot_lq=os.path.join(root, 'input.lmdb'))
    opt['network_g']['num_feat'] = cfg['num_feat']
    train.update(gt_size=cfg['patch'], batch_size_per_gpu=cfg['batch'])
    if cfg['basicsr_workers'] is not None:
        train['num_worker_per_gpu'] = cfg['basicsr_workers']
    train['dataset_enlarge_ratio'] = iters * train['batch_size_per_gpu'] // cfg['pairs'] + 1  # one epoch
    del opt['datasets']['val'], opt['val']
    opt.update(name='benchmark_basicsr', num_gpu=0 if device.type == 'cpu' else 1)
    opt['train'].update(total_iter=iters, scheduler=dict(type='MultiStepLR', milestones=[iters], gamma=0.5))
    if precision != 'fp32':
        opt['train']['amp'] = precision
    opt['logger'].update(print_freq=1, save_checkpoint_freq=10**9, use_tb_logger=False)
    run_dir = os.path.join(root, 'basicsr')
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, 'options.yml'), 'w') as f:
        yaml.dump(dict(opt), f, Dumper=ordered_yaml()[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get('PYTHONPATH'), REPO])))
    done = subprocess.run([sys.executable, '-m', 'dsmnet_arch.train', '-opt', 'options.yml'], cwd=run_dir, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = glob.glob(os.path.join(run_dir, 'experiments', 'benchmark_basicsr', 'train_benchmark_basicsr_*.log'))
    found = [LOG_LINE.search(line) for path in logs for line in open(path)]
    averages = [(int(m.group(1).replace(',', '')), float(m.group(2)), float(m.group(3))) for m in found if m]
    if done.returncode or len(averages) != iters:
        raise RuntimeError(f'benchmark: the BasicSR training run failed:\n{done.stdout[-3000:]}')
    n, time_avg, data_avg = averages[-1]
    _, first_time, first_data = averages[0]
    later_time, later_data = n * time_avg - first_time, n * data_avg - first_data
    return dict(iterations=n, workers=train['num_worker_per_gpu'], batch=train['batch_size_per_gpu'],
                seconds_per_iter=time_avg, data_seconds_per_iter=data_avg, share=data_avg / time_avg,
                share_after_first=later_data / later_time if n > 1 else None, first_iter_seconds=first_time,
                first_iter_data_seconds=first_data)
