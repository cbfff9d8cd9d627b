"""Speed and peak memory of the inference command, and how close tiled output is to whole-image output.

Usage::

    python scripts/benchmark_infer.py                 # 1 MP and 12 MP, whole and tiled, fp32 on the CPU
    python scripts/benchmark_infer.py --sizes 1 --threads 2 --no-stress
    python scripts/benchmark_infer.py --sizes 1 --weights net_g_latest.pth   # a trained model instead

Every figure comes from a fresh subprocess running a random-weight default DSMNet (num_feat 32,
4 levels) through the same code as ``dsmnet-derain`` (:class:`dsmnet_arch.infer.Deraining`), so
its peak resident memory (``ru_maxrss``) belongs to that one run; the memory before the run
(imports, model, test image) is printed too. A whole-image run is skipped when the predicted
activation memory (measured per pixel on a small probe) exceeds the available RAM.

Tiled-vs-whole PSNR is measured on the 1 MP image (1008 x 1008) with 2 x 2 tiles that overlap by
exactly the default overlap, the least overlap the command ever uses, for two random models:
``default`` (PyTorch's initialisation: its rain layer varies little with the image content) and
``stress`` (variance-preserving Kaiming initialisation, rain layer rescaled to a standard deviation
of 0.1: it depends strongly on distant pixels and on image-wide statistics). A trained model lies
somewhere in between: ``--weights`` measures everything with trained weights instead.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import torch

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.benchmarks import REPO
from dsmnet_arch.benchmarks.timing import first_call
from dsmnet_arch.data.rain_synthesis import synthesize_rain
from dsmnet_arch.infer import Deraining
from dsmnet_arch.loading import build_model
from dsmnet_arch.tiling import DEFAULT_OVERLAP, activation_bytes_per_pixel, count_tiles, tile_side
from dsmnet_arch.utils import keep_freed_memory

SIZES = {1: (1008, 1008), 12: (3000, 4000)}  # megapixels: (height, width)


def stress_init(model, image):
    """Variance-preserving weights, rain layer of the given image rescaled to a std of 0.1."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, a=0.2)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    with torch.no_grad():
        rain = image - model(image)
        model.conv_last.weight.mul_(0.1 / rain.std())
        model.conv_last.bias.zero_()


def test_image(height, width):
    """A rainy photo (scikit-image's astronaut with heavy synthetic rain) resized to height x width, BGR float."""
    import skimage.data

    clean = skimage.data.astronaut().astype(np.float32) / 255
    rainy, _ = synthesize_rain(clean, preset='heavy', seed=0)
    return cv2.resize(np.ascontiguousarray(rainy[..., ::-1]), (width, height), interpolation=cv2.INTER_CUBIC)


def worker(job):
    """One measurement in this process; prints a JSON line."""
    keep_freed_memory()  # as dsmnet-derain does
    if job['threads']:
        torch.set_num_threads(job['threads'])
    torch.manual_seed(0)
    model = build_model(job['weights']) if job['weights'] else DSMNet().eval()
    height, width = job['size']
    img = np.clip(test_image(height, width), 0, 1)
    if job['init'] == 'stress':
        probe = torch.from_numpy(np.ascontiguousarray(test_image(256, 256)[..., ::-1].transpose(2, 0, 1)))[None]
        stress_init(model, probe)
    multiple = model.pad_multiple
    derain = Deraining(model, torch.device('cpu'), 'fp32', job['tile'], job['overlap'], 1, multiple)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    outputs = []
    seconds = first_call(lambda: outputs.append(derain(img)), torch.device('cpu'))
    if job['save']:
        np.save(job['save'], outputs[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(seconds=seconds, megapixels=height * width / 1e6, rss_before=before, peak_rss=peak,
                          tiles=count_tiles(height, width, job['tile'], job['overlap'], multiple))))


def measure(**job):
    """One measurement (:func:`worker`) in a fresh process, so that its peak resident memory is its own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get('PYTHONPATH'), REPO])))
    proc = subprocess.run([sys.executable, '-m', __spec__.name, '--worker', json.dumps(job)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f'measurement {job} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_ram():
    """Bytes of memory available to a new process (Linux's MemAvailable)."""
    with open('/proc/meminfo') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('MemAvailable:'))


def psnr(a, b):
    """PSNR in dB of two images in [0, 1] (clipped)."""
    return 10 * np.log10(1 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1))**2))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1, 12], choices=sorted(SIZES), help='megapixels')
    parser.add_argument('--tile', type=int, default=536,
                        help='tile side of the tiled runs (default 536: 2 x 2 tiles on the 1 MP image, overlapping '
                        'by exactly the default overlap)')
    parser.add_argument('--overlap', type=int, default=DEFAULT_OVERLAP)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--no-stress', action='store_true', help='skip the PSNR of the stress-test model')
    parser.add_argument('--weights', help='trained DSMNet weights to measure instead of a random model')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def planned_runs(args):
    """(megapixels, tile side or None for whole, 'default' or 'stress' model) of every measurement."""
    runs = [(mp, tile, 'default') for mp in args.sizes for tile in (None, args.tile)]
    if 1 in args.sizes and not args.no_stress and not args.weights:
        runs += [(1, None, 'stress'), (1, args.tile, 'stress')]
    return runs


def measure_row(args, per_pixel, multiple, tmp, run, outputs):
    """Measure one run and print its table row (the default model's; a skipped row when the activations
    would not fit in memory); the 1 MP outputs are saved under ``tmp`` and listed in ``outputs``."""
    mp, tile, init = run
    height, width = SIZES[mp]
    label = f'{width}x{height} ({height * width / 1e6:.1f} MP)'
    tiling = 'whole' if tile is None else f'tile {tile}'
    activations = per_pixel * tile_side(tile, height, multiple) * tile_side(tile, width, multiple)
    if activations > 0.8 * available_ram():
        print(f'| {label} | {tiling} | | skipped: needs about {activations / 2**30:.1f} GiB of activations, '
              f'{available_ram() / 2**30:.1f} GiB available | | | |', flush=True)
        return
    save = os.path.join(tmp, f'{mp}_{tile}_{init}.npy') if mp == 1 else None
    r = measure(size=(height, width), tile=tile, overlap=args.overlap, threads=args.threads, init=init,
                weights=args.weights, save=save)
    if save:  # the 1 MP outputs, compared below
        outputs[init, tile] = save
    if init == 'default':
        print(f'| {label} | {tiling} | {r["tiles"]} | {r["seconds"] / r["megapixels"]:.1f} | '
              f'{r["peak_rss"] / 2**30:.2f} GiB | {r["rss_before"] / 2**30:.2f} GiB | '
              f'{activations / 2**30:.2f} GiB |', flush=True)


def print_tiled_vs_whole(args, outputs):
    """The PSNR of each model's tiled 1 MP output against its whole-image output."""
    for init in ('default', 'stress'):
        if (init, None) in outputs and (init, args.tile) in outputs:
            value = psnr(np.load(outputs[init, None]), np.load(outputs[init, args.tile]))
            model_name = 'trained' if args.weights else f'{init} random'
            print(f'tiled vs whole, {model_name} model, 1 MP, tile {args.tile}, overlap {args.overlap}: '
                  f'{value:.1f} dB PSNR')


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    model = build_model(args.weights) if args.weights else DSMNet().eval()
    per_pixel = activation_bytes_per_pixel(model)
    what = f'weights {args.weights}' if args.weights else 'random-weight DSMNet (num_feat 32, 4 levels)'
    print(f'# dsmnet-derain, CPU, fp32, {what}, overlap {args.overlap}, '
          f'{args.threads or torch.get_num_threads()} threads; activations {per_pixel:.0f} bytes/pixel (probe); '
          f'load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    print('| image | tiling | tiles | s/MP | peak RSS | RSS before run | predicted activations |')
    print('|---|---|---|---|---|---|---|')
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in planned_runs(args):
            measure_row(args, per_pixel, model.pad_multiple, tmp, run, outputs)
        print_tiled_vs_whole(args, outputs)
    print(f'load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
    main()
