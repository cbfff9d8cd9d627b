"""Speed and memory of DSM-Net against the machine's own limit, as a markdown table and JSON.

    python scripts/benchmark.py [--device cpu|cuda] [--precision fp32|bf16|fp16] [--compile] [--no-data]
                                [--tile N] [--json FILE] [--quick]

One run measures, in this order, each in the precision of ``--precision`` (autocast as ``train: amp``
does; fp16 on CUDA only, its training step with a gradient scaler):

- the reference: a plain 3x3 convolution with num_feat channels, forward + backward on
  32 x C x 64 x 64 and forward only on 1 x C x 512 x 512, each in its faster memory format
  (contiguous or channels-last): the practical limit of the machine for this kind of network;
- the DSM-Net training step (forward, MSE + SSIM loss, backward, Adam step) on the paper's batch
  of 32 x 3 x 64 x 64 patches: seconds per step, iterations and patches/s, GFLOP/s, its fraction of
  the reference's forward + backward GFLOP/s and peak memory; and from it, the time the paper's
  protocol would take (``total_iter`` of ``options/train_DSMNet_<set>.yml`` x seconds per step, data
  loading and validation left out) for Rain100H, Rain100L, Rain800 and Rain1400;
- inference on 256, 512 and 1024 pixels square: ms per megapixel, GFLOP/s, fraction of the
  reference's forward GFLOP/s, peak memory; and a 12 MP (4000 x 3000) image in tiles
  (``dsmnet_arch.tiling.tiled_forward``, overlap 64, the tile side up to ``--tile`` that computes
  the fewest pixels; in batches of 4 tiles on a GPU, as ``dsmnet-derain`` runs them, else 1), one
  timed run after a warm-up on one tile;
- the data pipeline: BasicSR's PairedImageDataset with the paper's 64 x 64 random crop and flips,
  from PNG files and from LMDB (``basicsr.utils.lmdb_util``; a small generated set of 481 x 321
  pairs, the size of Rain100L, in a temporary folder), in samples/s of one worker, against the
  patches/s the training step consumes. "data share" is the share of the iteration time spent
  loading when one worker loads in turn with the training step (an upper bound for BasicSR's
  data time on a machine whose cores are all busy training);
- BasicSR itself: ``dsmnet_arch/train.py`` with the paper's LMDB options and their default
  data-loader workers for a few iterations; its log's data time against its iteration time
  (``--no-data`` leaves out these two);
- with ``--compile``: the training step and inference at the reference's side again, with the network
  ``torch.compile``'d as ``train: compile: true`` and ``dsmnet-derain --compile`` do it (static shapes),
  against the eager figures above, and the time of the first call, which compiles.

On CUDA, cuDNN picks its convolution algorithms by timing them (``cudnn.benchmark``), as BasicSR's
trainer sets it; fp32 convolutions use TF32 where PyTorch's default allows it (Ampere and later;
the header says which). Times are taken after ``torch.cuda.synchronize``.

Like the package's programs, the benchmark first makes glibc keep freed memory for reuse
(``dsmnet_arch.utils.keep_freed_memory``; ``--system-malloc`` leaves malloc as it is), for the
reference and the model alike.

GFLOP/s always counts the FLOPs of the straightforward model of the specification
(``torch.utils.flop_counter``: convolutions and matrix products; a backward pass counts the input
and the weight gradients), never extra arithmetic an optimised implementation might do. Times
are the best of ``--repeats`` runs after one warm-up; the reference and the model are timed in
the same run, so their ratio holds on a busy machine, and each timed run of the reference repeats
the convolution for at least 2 s, so that it sees as much of the machine's load as a model run.
Peak memory: on a GPU the peak memory allocated by PyTorch; on the CPU how far the resident
memory of the process (Linux) rose above its level before the measurement, input and output
included. ``--quick`` runs the same measurements on tiny sizes as a smoke test.
"""
import argparse
import contextlib
import ctypes
import datetime
import glob
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import dsmnet_arch  # noqa: F401  (BasicSR compatibility fixes before basicsr is imported)
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.losses.mse_ssim_loss import MSESSIMLoss
from dsmnet_arch.models.derain_model import AMP_DTYPES, COMPILE_DEFAULTS, amp_supported
from dsmnet_arch.tiling import count_tiles, tile_side, tiled_forward
from dsmnet_arch.utils import keep_freed_memory

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.options import ordered_yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# sizes of a full run (the paper's training batch) and of a smoke run
PRESETS = {
    'full': dict(num_feat=32, batch=32, patch=64, reference_side=512, sides=(256, 512, 1024), large=(3000, 4000),
                 tile=640, overlap=64, pairs=16, pair_size=(321, 481), samples=256, reference_seconds=2.0,
                 basicsr_iters=24, basicsr_workers=None),
    'quick': dict(num_feat=8, batch=2, patch=32, reference_side=64, sides=(32, 64), large=(96, 128),
                  tile=64, overlap=8, pairs=4, pair_size=(72, 96), samples=8, reference_seconds=0.0,
                  basicsr_iters=3, basicsr_workers=1),
}
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}
#: the paper's four training sets, whose options files give the protocol's iterations
PROTOCOL_DATASETS = ('Rain100H', 'Rain100L', 'Rain800', 'Rain1400')


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def best_time(fn, repeats, device, min_seconds=0.0):
    """Least wall time per call of ``fn`` over ``repeats`` timed runs, after one warm-up call.

    A timed run calls ``fn`` until ``min_seconds`` have passed (at least once), so that a short
    measurement averages over about as much of a busy machine's load as a long one.
    """
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while calls == 0 or time.perf_counter() - start < min_seconds:
            fn()
            synchronize(device)
            calls += 1
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def _status_kib(field):
    with open('/proc/self/status') as f:
        return int(re.search(rf'{field}:\s+(\d+) kB', f.read()).group(1))


class PeakMemory:
    """Peak memory a block of code adds, in bytes (``None`` where it cannot be measured).

    CUDA: the peak memory allocated by PyTorch on the device. CPU (Linux): the peak resident set
    size of the process while the block runs minus the resident size before it, so the memory
    of Python and its libraries is left out. Heap memory freed earlier is first handed back to
    the system (glibc ``malloc_trim``), so that reusing it does not hide the block's peak.
    """

    def __init__(self, device):
        self.device = device
        self.bytes = None
        self._start = None

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
        with contextlib.suppress(OSError, AttributeError):
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # resets the peak resident size (VmHWM) to the current one
            self._start = _status_kib('VmRSS')
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        elif self._start is not None:
            self.bytes = (_status_kib('VmHWM') - self._start) * 1024


def spec_flops(num_feat, shape, train):
    """FLOPs of the straightforward model of the spec: one forward (+ backward when ``train``).

    DSMNet's optimisations (memory format, in-place operations) keep the spec's convolutions one
    for one; tests/test_fast_equivalence.py checks that the count equals that of the first,
    straightforward implementation.
    """
    with torch.device('meta'):
        model = DSMNet(num_feat=num_feat).train(train)
        x = torch.empty(shape)
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
        out = model(x)
        if train:
            out.sum().backward()
    return counter.get_total_flops()


def reference_conv(num_feat, shape, train, device, autocast, repeats, min_seconds):
    """GFLOP/s of a 3x3 convolution C -> C on ``shape``, forward (+ backward), in its faster memory format."""
    results = []
    for name, memory_format in MEMORY_FORMATS.items():
        conv = nn.Conv2d(num_feat, num_feat, 3, padding=1).to(device, memory_format=memory_format)
        x = torch.randn(shape, device=device).contiguous(memory_format=memory_format).requires_grad_(train)

        def step():
            with autocast, torch.set_grad_enabled(train):
                y = conv(x)
            if train:
                y.backward(torch.ones_like(y))

        with FlopCounterMode(display=False) as counter:
            step()
        seconds = best_time(step, repeats, device, min_seconds)
        results.append(dict(shape=list(shape), memory_format=name, seconds=seconds,
                            gflops=counter.get_total_flops() / seconds / 1e9))
    return max(results, key=lambda r: r['gflops'])


def autocast_for(device, precision):
    """The autocast context of ``--precision`` on ``device`` (disabled for fp32)."""
    return torch.autocast(device.type, dtype=AMP_DTYPES.get(precision), enabled=precision != 'fp32')


def first_call(fn, device):
    """Seconds of one call of ``fn`` (for a compiled function: compiling included)."""
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def training_step(cfg, device, precision, repeats, compile=False):
    """Seconds per DSM-Net training step as DerainModel runs it, on random [0, 1] patches.

    Autocast in ``precision``, fp16 with a gradient scaler; ``compile``: the network ``torch.compile``'d
    (the first step's time, compiling included, is ``first_call_seconds``).
    """
    torch.manual_seed(0)
    shape = (cfg['batch'], 3, cfg['patch'], cfg['patch'])
    net = DSMNet(num_feat=cfg['num_feat']).to(device).train()
    model = torch.compile(net, **COMPILE_DEFAULTS) if compile else net
    criterion = MSESSIMLoss().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(device.type) if precision == 'fp16' else None
    autocast = autocast_for(device, precision)
    lq = torch.rand(shape, device=device)
    gt = (lq * 0.8 + 0.1).clamp(0, 1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(lq)
        loss = criterion(out.float(), gt)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    first = first_call(step, device) if compile else None
    with PeakMemory(device) as peak:
        seconds = best_time(step, repeats, device)
    gflop = spec_flops(cfg['num_feat'], shape, train=True) / 1e9
    return dict(shape=list(shape), seconds=seconds, patches_per_s=shape[0] / seconds, iters_per_s=1 / seconds,
                gflop=gflop, gflops=gflop / seconds, peak_bytes=peak.bytes, first_call_seconds=first)


def protocol_times(seconds_per_iter):
    """Time of the paper's protocol on each training set: ``total_iter`` of its options x seconds per iteration."""
    rows = []
    for name in PROTOCOL_DATASETS:
        with open(os.path.join(REPO, 'options', f'train_DSMNet_{name}.yml')) as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
        iters = opt['train']['total_iter']
        rows.append(dict(dataset=name, total_iter=iters, batch=opt['datasets']['train']['batch_size_per_gpu'],
                         seconds=iters * seconds_per_iter))
    return rows


def inference(net, side, device, autocast, repeats, num_feat, compile=False):
    """Forward time and peak memory of one side x side image, whole; ``compile``: through ``torch.compile``
    (the first call's time, compiling included, is ``first_call_seconds``)."""
    x = torch.rand(1, 3, side, side, device=device)
    model = torch.compile(net, **COMPILE_DEFAULTS) if compile else net

    def run():
        with torch.no_grad(), autocast:
            model(x)

    first = first_call(run, device) if compile else None
    with PeakMemory(device) as peak:
        seconds = best_time(run, repeats, device)
    gflop = spec_flops(num_feat, x.shape, train=False) / 1e9
    return dict(shape=list(x.shape), seconds=seconds, ms_per_mp=seconds * 1e3 / (side * side / 1e6),
                gflops=gflop / seconds, peak_bytes=peak.bytes, first_call_seconds=first)


def least_work_tile(height, width, largest, overlap, multiple):
    """The tile side up to ``largest`` for which tiled_forward computes the fewest pixels."""

    def pixels(tile):
        return count_tiles(height, width, tile, overlap, multiple) * (
            tile_side(tile, height, multiple) * tile_side(tile, width, multiple))

    return min(range(2 * overlap + multiple, largest + 1), key=lambda tile: (pixels(tile), -tile))


def tiled_inference(net, cfg, device, autocast):
    """One timed tiled forward pass of a large image (kept on the CPU, tiles on ``device``), in batches
    of tiles as ``dsmnet-derain`` runs them (4 on a GPU, else 1).

    The peak memory includes the input image and the output.
    """
    height, width = cfg['large']
    multiple = net.pad_multiple
    overlap = cfg['overlap']
    batch = 4 if device.type == 'cuda' else 1
    tile = least_work_tile(height, width, cfg['tile'], overlap, multiple)
    sides = [tile_side(tile, height, multiple), tile_side(tile, width, multiple)]
    with torch.inference_mode(), autocast:  # warm-up on one tile: the shape every tile has
        net(torch.rand(1, 3, *sides, device=device))
    synchronize(device)
    with PeakMemory(device) as peak:
        img = torch.rand(1, 3, height, width)
        start = time.perf_counter()
        with torch.inference_mode(), autocast:
            tiled_forward(net, img, tile=tile, overlap=overlap, batch_size=batch, multiple=multiple, device=device)
        synchronize(device)
        seconds = time.perf_counter() - start
    tiles = count_tiles(height, width, tile, overlap, multiple)
    return dict(shape=[1, 3, height, width], tile=sides, overlap=overlap, tiles=tiles, batch=batch,
                computed_pixels_ratio=tiles * sides[0] * sides[1] / (height * width), seconds=seconds,
                ms_per_mp=seconds * 1e3 / (height * width / 1e6), peak_bytes=peak.bytes)


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


def header(args, device):
    gpu = None
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        gpu = dict(memory_bytes=props.total_memory, capability=f'{props.major}.{props.minor}', cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), cudnn_benchmark=torch.backends.cudnn.benchmark,
                   tf32_convolutions=torch.backends.cudnn.allow_tf32)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            with open('/proc/cpuinfo') as f:
                found = re.search(r'model name\s*:\s*(.+)', f.read())
            name = found.group(1).strip() if found else name
        name = f'{name}, {os.cpu_count()} logical cores'
    return dict(date=datetime.datetime.now().isoformat(timespec='seconds'),
                command=' '.join(['python', 'scripts/benchmark.py', *map(shlex.quote, args.argv)]),
                device=device.type, device_name=name, precision=args.precision, threads=torch.get_num_threads(),
                torch=torch.__version__, preset='quick' if args.quick else 'full', repeats=args.repeats,
                compile=args.compile, gpu=gpu, glibc_tunables=os.environ.get('GLIBC_TUNABLES'),
                load_average=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None)


def run(args, save=lambda results: None):
    """All measurements; ``save(results)`` is called after each, so that a run cut short keeps what it measured
    (``header.complete`` stays false)."""
    device = torch.device(args.device)
    malloc = 'system default' if args.system_malloc or not keep_freed_memory() else 'keeps freed memory'
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('benchmark: --device cuda, but PyTorch sees no CUDA device')
        if args.precision == 'bf16' and not amp_supported('bf16', device):
            raise SystemExit(f'benchmark: --precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 '
                             'arithmetic; use fp16')
        torch.backends.cudnn.benchmark = True  # as BasicSR's trainer sets it
    cfg = PRESETS['quick' if args.quick else 'full']
    if args.tile:
        cfg = dict(cfg, tile=args.tile)
    autocast = autocast_for(device, args.precision)
    results = dict(header=dict(header(args, device), malloc=malloc, complete=False))
    c, patch, side = cfg['num_feat'], cfg['patch'], cfg['reference_side']

    start = time.perf_counter()
    log = (lambda message: print(f'{time.perf_counter() - start:7.1f} s  {message}', file=sys.stderr, flush=True)
           ) if args.verbose else (lambda message: None)
    log('reference convolutions')
    results['reference'] = dict(
        train=reference_conv(c, (cfg['batch'], c, patch, patch), True, device, autocast, args.repeats,
                             cfg['reference_seconds']),
        inference=reference_conv(c, (1, c, side, side), False, device, autocast, args.repeats,
                                 cfg['reference_seconds']))
    save(results)
    log('training step')
    train = training_step(cfg, device, args.precision, args.repeats)
    train['fraction'] = train['gflops'] / results['reference']['train']['gflops']
    results['train_step'] = train
    results['protocol'] = protocol_times(train['seconds'])
    save(results)

    torch.manual_seed(0)
    net = DSMNet(num_feat=c).to(device).eval()
    results['inference'] = []
    for s in cfg['sides']:
        log(f'inference {s} x {s}')
        row = inference(net, s, device, autocast, args.repeats, c)
        row['fraction'] = row['gflops'] / results['reference']['inference']['gflops']
        results['inference'].append(row)
        save(results)
    log('tiled inference')
    tiled = tiled_inference(net, cfg, device, autocast)
    tiled['ratio_to_largest_whole'] = tiled['ms_per_mp'] / results['inference'][-1]['ms_per_mp']
    results['tiled'] = tiled
    save(results)

    if not args.no_data:
        log('data pipeline and BasicSR training')
        rates, results['basicsr'] = data_pipeline(cfg, device, args.precision, args.repeats)
        consumed = train['patches_per_s']
        results['data'] = dict(crop=patch, image_size=list(cfg['pair_size']), consumed_per_s=consumed, **{
            backend: dict(samples_per_s=rate, share=consumed / (consumed + rate)) for backend, rate in rates.items()})
        save(results)
    if args.compile:
        log('training step, compiled')
        compiled = training_step(cfg, device, args.precision, args.repeats, compile=True)
        compiled['fraction'] = compiled['gflops'] / results['reference']['train']['gflops']
        compiled['speedup'] = train['seconds'] / compiled['seconds']
        results['compiled'] = dict(train_step=compiled)
        save(results)
        log(f'inference {side} x {side}, compiled')
        eager = next(row for row in results['inference'] if row['shape'][-1] == side)
        row = inference(net, side, device, autocast, args.repeats, c, compile=True)
        row['fraction'] = row['gflops'] / results['reference']['inference']['gflops']
        row['speedup'] = eager['seconds'] / row['seconds']
        results['compiled']['inference'] = row
    results['header']['complete'] = True
    results['header']['load_average_end'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    return results


def shape_str(shape):
    return ' x '.join(map(str, shape))


def megabytes(value):
    return '-' if value is None else f'{value / 2**20:,.0f} MiB'


def duration(seconds):
    """``seconds`` in hours below two days, else in days."""
    return f'{seconds / 3600:,.1f} h' if seconds < 48 * 3600 else f'{seconds / 86400:,.1f} days'


def gpu_line(gpu):
    return (f'- GPU: {gpu["memory_bytes"] / 2**30:.0f} GiB, compute capability {gpu["capability"]}, '
            f'CUDA {gpu["cuda"]}, cuDNN {gpu["cudnn"]}, cudnn.benchmark {gpu["cudnn_benchmark"]}, TF32 convolutions '
            f'{"allowed" if gpu["tf32_convolutions"] else "off"}')


def table(results):
    """The results as markdown: a header list and one table."""
    h = results['header']
    load = ' -> '.join(', '.join(f'{x:.1f}' for x in h[key]) for key in ('load_average', 'load_average_end')
                       if h.get(key))
    lines = [f'- date: {h["date"]}', f'- command: `{h["command"]}`', f'- device: {h["device_name"]} ({h["device"]})',
             f'- precision: {h["precision"]}, threads: {h["threads"]}, torch {h["torch"]}, '
             f'best of {h["repeats"]} after a warm-up', f'- load average (1, 5, 15 min), start -> end: {load}',
             f'- malloc: {h["malloc"]}; GLIBC_TUNABLES: {h["glibc_tunables"] or "not set"}']
    if h.get('gpu'):
        lines.append(gpu_line(h['gpu']))
    lines += ['', '| measurement | shape | time | rate | GFLOP/s | of reference | peak memory |',
              '|---|---|---:|---:|---:|---:|---:|']
    for name, row in (('reference 3x3 conv, fwd + bwd', results['reference']['train']),
                      ('reference 3x3 conv, fwd', results['reference']['inference'])):
        lines.append(f'| {name} | {shape_str(row["shape"])}, {row["memory_format"]} | {row["seconds"] * 1e3:.1f} ms '
                     f'| | {row["gflops"]:.1f} | 1.00 | |')
    t = results['train_step']
    lines.append(f'| training step (fwd, loss, bwd, Adam) | {shape_str(t["shape"])} | {t["seconds"]:.2f} s '
                 f'| {t["iters_per_s"]:.2f} it/s, {t["patches_per_s"]:.1f} patches/s | {t["gflops"]:.1f} '
                 f'| {t["fraction"]:.2f} | {megabytes(t["peak_bytes"])} |')
    for p in results['protocol']:
        lines.append(f'| paper protocol, {p["dataset"]}: {p["total_iter"]:,} iterations x the step above '
                     f'| batch {p["batch"]} | {duration(p["seconds"])} | | | | |')
    for row in results['inference']:
        lines.append(f'| inference | {shape_str(row["shape"])} | {row["ms_per_mp"]:,.0f} ms/MP | '
                     f'{row["seconds"] * 1e3:,.0f} ms/image | {row["gflops"]:.1f} | {row["fraction"]:.2f} '
                     f'| {megabytes(row["peak_bytes"])} |')
    r = results['tiled']
    lines.append(f'| inference, tiled ({r["tiles"]} tiles of {shape_str(r["tile"])} in batches of {r["batch"]}, '
                 f'overlap {r["overlap"]}, {r["computed_pixels_ratio"]:.2f}x pixels computed) '
                 f'| {shape_str(r["shape"])} | {r["ms_per_mp"]:,.0f} ms/MP '
                 f'| {r["ratio_to_largest_whole"]:.2f}x the ms/MP of {results["inference"][-1]["shape"][-1]}^2 | | '
                 f'| {megabytes(r["peak_bytes"])} |')
    if 'data' in results:
        lines += data_rows(results['data'], results['basicsr'])
    if 'compiled' in results:
        t, row = results['compiled']['train_step'], results['compiled']['inference']
        lines.append(f'| training step, torch.compile (first step {t["first_call_seconds"]:,.0f} s) '
                     f'| {shape_str(t["shape"])} | {t["seconds"]:.2f} s | {t["speedup"]:.2f}x eager, '
                     f'{t["iters_per_s"]:.2f} it/s | {t["gflops"]:.1f} | {t["fraction"]:.2f} '
                     f'| {megabytes(t["peak_bytes"])} |')
        lines.append(f'| inference, torch.compile (first call {row["first_call_seconds"]:,.0f} s) '
                     f'| {shape_str(row["shape"])} | {row["ms_per_mp"]:,.0f} ms/MP | {row["speedup"]:.2f}x eager, '
                     f'{row["seconds"] * 1e3:,.0f} ms/image | {row["gflops"]:.1f} | {row["fraction"]:.2f} '
                     f'| {megabytes(row["peak_bytes"])} |')
    return '\n'.join(lines)


def data_rows(d, b):
    """Table rows of the data pipeline (``d``) and of the BasicSR run (``b``)."""
    lines = []
    for backend, name in (('disk', 'PNG files'), ('lmdb', 'LMDB')):
        lines.append(f'| data, {name}, 1 worker | {d["crop"]}^2 crops of {shape_str(d["image_size"])} | '
                     f'| {d[backend]["samples_per_s"]:,.0f} samples/s | | | data share {d[backend]["share"]:.1%} |')
    lines.append(f'| training consumes | | | {d["consumed_per_s"]:.1f} patches/s | | | |')
    after = '' if b['share_after_first'] is None else f', {b["share_after_first"]:.1%} after the first iteration'
    workers = f'{b["workers"]} worker' + ('s' if b['workers'] != 1 else '')
    lines.append(f'| BasicSR training, LMDB, {workers}, {b["iterations"]} iterations (its log) '
                 f'| {b["batch"]} x 3 x {d["crop"]} x {d["crop"]} | {b["seconds_per_iter"]:.2f} s/iter '
                 f'| data {b["data_seconds_per_iter"]:.3f} s/iter | | | data share {b["share"]:.1%}{after} |')
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where to run (default cpu)')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'),
                        help='fp32 (default), or autocast in bf16 or fp16 (CUDA only) as train: amp does')
    parser.add_argument('--compile', action='store_true',
                        help='also time the training step and inference with the network torch.compile\'d')
    parser.add_argument('--no-data', action='store_true',
                        help='leave out the data pipeline and the BasicSR training run')
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch (default: its own choice)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs after the warm-up (default 3)')
    parser.add_argument('--tile', type=int,
                        help='largest tile side for the 12 MP image (default 640, which gives tiles of 560)')
    parser.add_argument('--json', default=os.path.join('results', 'benchmark.json'),
                        help='where the JSON goes (default results/benchmark.json)')
    parser.add_argument('--system-malloc', action='store_true',
                        help="leave glibc's malloc as it is (default: keep freed memory for reuse, as the "
                        "package's programs do; dsmnet_arch.utils.keep_freed_memory)")
    parser.add_argument('--quick', action='store_true', help='tiny sizes: a smoke run in seconds')
    parser.add_argument('--verbose', action='store_true', help='name each measurement on stderr as it starts')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error('--repeats must be at least 1')
    if args.precision == 'fp16' and args.device != 'cuda':
        parser.error('--precision fp16 needs --device cuda (float16 autocast is a GPU mode; on the CPU use bf16)')
    args.argv = sys.argv[1:] if argv is None else list(argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)

    def save(results):
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)

    results = run(args, save)
    save(results)
    print(table(results))
    print(f'\nJSON: {args.json}')


if __name__ == '__main__':
    main()
