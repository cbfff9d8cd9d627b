"""Two versions of the architecture timed in one process, call by call in turn: a change measured on a busy machine.

    python -m dsmnet_arch.benchmarks.compare OTHER_ARCH_FILE [--rounds 10] [--train] [--precision fp32|bf16]
                                             [--side 512] [--batch 32]

``OTHER_ARCH_FILE`` is another version's ``dsmnet_arch/archs/dsmnet_arch.py`` (e.g. from
``git show <commit>:dsmnet_arch/archs/dsmnet_arch.py > /tmp/before_arch.py``). Both networks are built
with the Rain100H training options' ``network_g`` and hold the same weights; each round times one call
of each (inference on a side x side image, or with ``--train`` a training step of the benchmark on
batch x 3 x 64 x 64 patches), so that a change in the machine's load hits both alike; ``--precision
bf16`` runs both under the CPU autocast of ``train: amp: bf16`` and ``dsmnet-derain --precision bf16``.
Prints the median and the least time of each, and their ratio.
"""
import argparse
import importlib.util
import statistics
import sys
import time

import torch

from dsmnet_arch.benchmarks.training import benchmark_network, training_step
from dsmnet_arch.precision import autocast


def load_arch(path):
    """The module of an architecture file, loaded under a name of its own and without BasicSR's registry (the
    package's DSMNet is registered there already)."""
    spec = importlib.util.spec_from_file_location('dsmnet_arch_compared', path)
    module = importlib.util.module_from_spec(spec)
    registry = sys.modules.get('basicsr.utils.registry')
    sys.modules['basicsr.utils.registry'] = None  # the file's ``import`` fails: it runs with ARCH_REGISTRY = None
    try:
        spec.loader.exec_module(module)
    finally:
        if registry is None:
            del sys.modules['basicsr.utils.registry']
        else:
            sys.modules['basicsr.utils.registry'] = registry
    return module


def calls(nets, train, side, batch, precision='fp32'):
    """One timed function per network: an inference pass under the autocast of ``precision``, or the benchmark's
    training step (:func:`~dsmnet_arch.benchmarks.training.training_step`) in ``precision``."""
    if train:
        cfg = dict(batch=batch, patch=64)
        return {name: training_step(cfg, torch.device('cpu'), precision, net=net)[0] for name, net in nets.items()}
    torch.manual_seed(0)
    x = torch.rand(1, 3, side, side)
    context = autocast(torch.device('cpu'), precision)

    def inference(net):
        def run():
            with context:
                net(x)
        return run

    return {name: inference(net.eval()) for name, net in nets.items()}


def compare(other_file, rounds, train=False, side=512, batch=32, num_feat=32, precision='fp32'):
    """``{'other': [seconds, ...], 'this': [...]}``: ``rounds`` alternating calls of each after one warm-up."""
    this = benchmark_network(dict(num_feat=num_feat))
    other = benchmark_network(dict(num_feat=num_feat), load_arch(other_file).DSMNet)
    other.load_state_dict(this.state_dict())
    fns = calls({'other': other, 'this': this}, train, side, batch, precision)
    times = {name: [] for name in fns}
    with torch.set_grad_enabled(train):
        for fn in fns.values():
            fn()
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('other', help="another version's dsmnet_arch/archs/dsmnet_arch.py")
    parser.add_argument('--rounds', type=int, default=10, help='alternating timed calls of each (default 10)')
    parser.add_argument('--train', action='store_true', help='time the training step instead of inference')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16'),
                        help='fp32 (default) or the CPU autocast to bf16')
    parser.add_argument('--side', type=int, default=512, help='inference image side (default 512)')
    parser.add_argument('--batch', type=int, default=32, help='training batch of 64 x 64 patches (default 32)')
    parser.add_argument('--num-feat', type=int, default=32, help='width of both networks (default 32)')
    args = parser.parse_args(argv)
    from dsmnet_arch.utils import keep_freed_memory

    keep_freed_memory()
    times = compare(args.other, args.rounds, args.train, args.side, args.batch, args.num_feat, args.precision)
    side = args.side
    what = f'training step, {args.batch} x 3 x 64 x 64' if args.train else f'inference, 1 x 3 x {side} x {side}'
    what += f', {args.precision}'
    print(f'| {what} | median | least |\n|---|---:|---:|')
    for name, label in (('other', args.other), ('this', 'this checkout')):
        print(f'| {label} | {statistics.median(times[name]) * 1e3:,.0f} ms | {min(times[name]) * 1e3:,.0f} ms |')
    ratio = statistics.median(times['this']) / statistics.median(times['other'])
    print(f'| this / other | {ratio:.3f} | {min(times["this"]) / min(times["other"]):.3f} |')


if __name__ == '__main__':
    main()
