"""Timing helpers of the benchmarks and of the reproduction's estimate: wall time, peak memory, durations."""
import contextlib
import ctypes
import re
import time

import torch


def synchronize(device):
    """Wait for the work queued on ``device`` (a CUDA GPU; nothing to wait for on the CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def first_call(fn, device):
    """Seconds of one call of ``fn`` (for a compiled function: compiling included)."""
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


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


def mean_time(fn, calls, device):
    """Mean wall time per call of ``fn`` over ``calls`` calls in a row, after one warm-up call."""
    fn()  # warm-up: allocations, cuDNN's algorithm search
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


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


def duration(seconds):
    """``seconds`` for a reader: '2.3 days' from two days on, '31.2 h' from an hour on, else '4 min 10 s',
    '12 s' (the benchmarks' protocol times, the reproduction's estimate, gpu_check's summary)."""
    if seconds >= 48 * 3600:
        return f'{seconds / 86400:,.1f} days'
    if seconds >= 3600:
        return f'{seconds / 3600:,.1f} h'
    seconds = round(seconds)
    parts = ((seconds // 60, 'min'), (seconds % 60, 's'))
    return ' '.join(f'{value} {unit}' for value, unit in parts if value) or '0 s'
