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
import json
import os
import sys
import time

import torch

from dsmnet_arch.benchmarks.data import data_pipeline
from dsmnet_arch.benchmarks.inference import inference, tiled_inference
from dsmnet_arch.benchmarks.profile import operator_times, summary, vector_extensions
from dsmnet_arch.benchmarks.reference import reference_conv
from dsmnet_arch.benchmarks.report import header, table
from dsmnet_arch.benchmarks.training import benchmark_network, protocol_times, time_training_step, training_step
from dsmnet_arch.precision import autocast, supported
from dsmnet_arch.utils import keep_freed_memory

# sizes of a full run (the paper's training batch) and of a smoke run
PRESETS = {
    'full': dict(num_feat=32, batch=32, patch=64, reference_side=512, sides=(256, 512, 1024), large=(3000, 4000),
                 tile=640, overlap=64, pairs=16, pair_size=(321, 481), samples=256, reference_seconds=2.0,
                 basicsr_iters=24, basicsr_workers=None),
    'quick': dict(num_feat=8, batch=2, patch=32, reference_side=64, sides=(32, 64), large=(96, 128),
                  tile=64, overlap=8, pairs=4, pair_size=(72, 96), samples=8, reference_seconds=0.0,
                  basicsr_iters=3, basicsr_workers=1),
}


def setup(args):
    """The device of ``--device``, PyTorch set up for it, and how malloc runs (``--system-malloc``); exits with
    one line when CUDA, or bf16 on the GPU, is missing."""
    device = torch.device(args.device)
    malloc = 'system default' if args.system_malloc or not keep_freed_memory() else 'keeps freed memory'
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise SystemExit('benchmark: --device cuda, but PyTorch sees no CUDA device')
        if args.precision == 'bf16' and not supported('bf16', device):
            raise SystemExit(f'benchmark: --precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 '
                             'arithmetic; use fp16')
        torch.backends.cudnn.benchmark = True  # as BasicSR's trainer sets it
    return device, malloc


class Measurements:
    """The measurements of one run, in order, each adding to ``results`` and calling ``save(results)``."""

    def __init__(self, args, device, save):
        self.args, self.device, self.save = args, device, save
        self.cfg = PRESETS['quick' if args.quick else 'full']
        if args.tile:
            self.cfg = dict(self.cfg, tile=args.tile)
        self.autocast = autocast(device, args.precision)
        self.results = {}
        self.start = time.perf_counter()

    def log(self, message):
        """Name a measurement on stderr as it starts (``--verbose``)."""
        if self.args.verbose:
            print(f'{time.perf_counter() - self.start:7.1f} s  {message}', file=sys.stderr, flush=True)

    def reference(self):
        """A 3x3 convolution, forward + backward on the training batch and forward on one large image."""
        self.log('reference convolutions')
        cfg, c = self.cfg, self.cfg['num_feat']
        shapes = dict(train=(cfg['batch'], c, cfg['patch'], cfg['patch']),
                      inference=(1, c, cfg['reference_side'], cfg['reference_side']))
        self.results['reference'] = {
            key: reference_conv(c, shape, key == 'train', self.device, self.autocast, self.args.repeats,
                                cfg['reference_seconds']) for key, shape in shapes.items()}
        self.save(self.results)

    def training(self, compile=False):
        """The training step (eager, or compiled against the eager one) and, eager, the paper's protocol."""
        self.log('training step' + (', compiled' if compile else ''))
        train = time_training_step(self.cfg, self.device, self.args.precision, self.args.repeats, compile=compile)
        train['fraction'] = train['gflops'] / self.results['reference']['train']['gflops']
        if compile:
            train['speedup'] = self.results['train_step']['seconds'] / train['seconds']
            self.results['compiled'] = dict(train_step=train)
        else:
            self.results['train_step'] = train
            self.results['protocol'] = protocol_times(train['seconds'])
        self.save(self.results)

    def inference(self, net):
        """Whole images of the preset's sides, then the large image in tiles."""
        self.results['inference'] = []
        for s in self.cfg['sides']:
            self.log(f'inference {s} x {s}')
            self.results['inference'].append(self._whole(net, s))
            self.save(self.results)
        self.log('tiled inference')
        tiled = tiled_inference(net, self.cfg, self.device, self.autocast)
        tiled['ratio_to_largest_whole'] = tiled['ms_per_mp'] / self.results['inference'][-1]['ms_per_mp']
        self.results['tiled'] = tiled
        self.save(self.results)

    def _whole(self, net, side, compile=False):
        row = inference(net, side, self.device, self.autocast, self.args.repeats, self.cfg['num_feat'],
                        compile=compile)
        row['fraction'] = row['gflops'] / self.results['reference']['inference']['gflops']
        return row

    def profiles(self, net):
        """Operator times (profiler) of one training step and one inference pass at the reference's side: the
        share outside convolutions and the top operators."""
        self.log('profiles')
        step, _ = training_step(self.cfg, self.device, self.args.precision)
        x = torch.rand(1, 3, self.cfg['reference_side'], self.cfg['reference_side'], device=self.device)

        def infer():
            with torch.no_grad(), self.autocast:
                net(x)

        try:
            self.results['profile'] = dict(
                train_step=summary(operator_times(step, self.device)),
                inference=dict(summary(operator_times(infer, self.device)), shape=list(x.shape)))
        except RuntimeError as e:  # a profiler that cannot start (e.g. no CUPTI for a GPU): the timings stand
            self.results['profile'] = dict(error=f'{type(e).__name__}: {e}'.splitlines()[0])
        self.save(self.results)

    def data(self):
        """One PairedImageDataset worker from PNG files and LMDB against what training consumes; BasicSR's run."""
        self.log('data pipeline and BasicSR training')
        rates, self.results['basicsr'] = data_pipeline(self.cfg, self.device, self.args.precision, self.args.repeats)
        consumed = self.results['train_step']['patches_per_s']
        shares = {backend: dict(samples_per_s=rate, share=consumed / (consumed + rate))
                  for backend, rate in rates.items()}
        self.results['data'] = dict(crop=self.cfg['patch'], image_size=list(self.cfg['pair_size']),
                                    consumed_per_s=consumed, **shares)
        self.save(self.results)

    def compiled_inference(self, net):
        """Inference at the reference's side, compiled, against the eager figure of the same side."""
        side = self.cfg['reference_side']
        self.log(f'inference {side} x {side}, compiled')
        eager = next(row for row in self.results['inference'] if row['shape'][-1] == side)
        row = self._whole(net, side, compile=True)
        row['speedup'] = eager['seconds'] / row['seconds']
        self.results['compiled']['inference'] = row


def run(args, save=lambda results: None):
    """All measurements; ``save(results)`` is called after each, so that a run cut short keeps what it measured
    (``header.complete`` stays false)."""
    device, malloc = setup(args)
    m = Measurements(args, device, save)
    m.results['header'] = dict(header(args, device), malloc=malloc, complete=False,
                               vector_extensions=vector_extensions() if device.type == 'cpu' else None)
    m.reference()
    m.training()
    torch.manual_seed(0)
    net = benchmark_network(m.cfg).to(device).eval()
    m.inference(net)
    if not args.no_data:
        m.data()
    if args.compile:
        m.training(compile=True)
        m.compiled_inference(net)
    m.profiles(net)  # last: the profiler's failure, if any, costs no other measurement
    m.results['header']['complete'] = True
    m.results['header']['load_average_end'] = list(os.getloadavg()) if hasattr(os, 'getloadavg') else None
    return m.results


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
