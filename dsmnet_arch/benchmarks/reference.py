"""The benchmark's yardsticks: FLOPs of the straightforward model of the spec, and a plain 3x3 convolution's speed."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.benchmarks.timing import best_time

MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def spec_flops(num_feat, shape, train):
    """FLOPs of the straightforward model of the spec: one forward (+ backward when ``train``).

    DSMNet's optimisations (memory format, in-place operations) keep the spec's convolutions one
    for one; tests/archs/test_fast_equivalence.py checks that the count equals that of the first,
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
