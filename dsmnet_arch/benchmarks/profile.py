"""Where the time goes: operator times from PyTorch's profiler, and the processor's vector extensions.

The benchmark reports the share of a training step and of an inference pass spent outside
convolutions (everything but the convolutions is memory traffic over feature maps), and names the
vector extensions of the CPU, so that figures from different machines can be read side by side.
"""
import collections
import contextlib
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from dsmnet_arch.benchmarks.timing import synchronize
from dsmnet_arch.precision import cpu_flags

#: the /proc/cpuinfo flags that decide how fast convolutions and element-wise kernels run, widest last
VECTOR_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_tile', 'amx_bf16',
                'amx_int8', 'asimd', 'sve', 'sve2', 'bf16')


def vector_extensions(flags=None):
    """The CPU's vector extensions of :data:`VECTOR_FLAGS` that ``flags`` (default: this CPU's) has, and the
    instruction set PyTorch's own kernels were dispatched to (``torch.backends.cpu.get_cpu_capability()``)."""
    flags = cpu_flags() if flags is None else flags
    return dict(flags=[f for f in VECTOR_FLAGS if f in flags], torch_capability=torch.backends.cpu.get_cpu_capability())


def is_convolution(name):
    """Whether the profiler's operator ``name`` is a convolution (forward, backward or a fused oneDNN one)."""
    return 'conv' in name.lower()


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ library logs every start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def operator_times(fn, device):
    """Self time of each operator over one call of ``fn``, in seconds, as ``{name: (seconds, calls)}``: on the
    CPU each operator's own wall time (intra-op threads included, callees excluded), on a GPU its kernels'
    device time. ``fn`` is called once before, outside the profiler (warm-up)."""
    fn()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    with _quiet_stderr(), profile(activities=activities) as prof:
        fn()
        synchronize(device)
    times = collections.defaultdict(lambda: [0.0, 0])
    for event in prof.key_averages():
        micros = event.self_device_time_total if device.type == 'cuda' else event.self_cpu_time_total
        if micros > 0:
            times[event.key][0] += micros / 1e6
            times[event.key][1] += event.count
    return {name: tuple(value) for name, value in times.items()}


def summary(times, top=8):
    """``times`` (:func:`operator_times`) as the share outside convolutions and the ``top`` operators."""
    total = sum(seconds for seconds, _ in times.values())
    outside = sum(seconds for name, (seconds, _) in times.items() if not is_convolution(name))
    rows = sorted(times.items(), key=lambda item: -item[1][0])[:top]
    return dict(seconds=total, outside_convolutions=outside / total if total else 0.0,
                top=[dict(name=name, seconds=seconds, calls=calls, share=seconds / total) for name, (seconds, calls)
                     in rows])
