"""The benchmark's results as markdown: the run's header and one table."""
import contextlib
import datetime
import os
import platform
import re
import shlex

import torch

from dsmnet_arch.benchmarks.timing import duration


def header(args, device):
    """The run's header: date, command, device (and its GPU's properties), precision, threads, load average."""
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


def shape_str(shape):
    """``[1, 3, 64, 64]`` -> ``'1 x 3 x 64 x 64'``."""
    return ' x '.join(map(str, shape))


def megabytes(value):
    """Bytes in MiB, ``'-'`` for ``None`` (not measured)."""
    return '-' if value is None else f'{value / 2**20:,.0f} MiB'


def gpu_line(gpu):
    """The header line of a GPU run: memory, compute capability, CUDA, cuDNN and its settings."""
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
    if h.get('vector_extensions'):
        v = h['vector_extensions']
        lines.append(f'- vector extensions: {" ".join(v["flags"]) or "none listed"}; PyTorch\'s kernels: '
                     f'{v["torch_capability"]}')
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
        lines += compiled_rows(results['compiled'])
    if 'profile' in results:
        lines += profile_rows(results['profile'], results['train_step']['shape'])
    return '\n'.join(lines)


def profile_rows(profile, train_shape, top=4):
    """A second table: the share of the operator time outside convolutions and the top operators."""
    if 'error' in profile:
        return ['', f'Profile: the profiler failed ({profile["error"]})']
    lines = ['', '| profile (one call, profiler) | shape | operator time | outside convolutions | top operators |',
             '|---|---|---:|---:|---|']
    for name, row, shape in (('training step', profile['train_step'], train_shape),
                             ('inference', profile['inference'], profile['inference']['shape'])):
        ops = ', '.join(f'{op["name"]} {op["share"]:.0%}' for op in row['top'][:top])
        lines.append(f'| {name} | {shape_str(shape)} | {row["seconds"]:.2f} s | {row["outside_convolutions"]:.1%} '
                     f'| {ops} |')
    return lines


def compiled_rows(compiled):
    """Table rows of the ``--compile`` measurements: the training step and inference, torch.compile'd."""
    t, row = compiled['train_step'], compiled['inference']
    return [f'| training step, torch.compile (first step {t["first_call_seconds"]:,.0f} s) '
            f'| {shape_str(t["shape"])} | {t["seconds"]:.2f} s | {t["speedup"]:.2f}x eager, '
            f'{t["iters_per_s"]:.2f} it/s | {t["gflops"]:.1f} | {t["fraction"]:.2f} '
            f'| {megabytes(t["peak_bytes"])} |',
            f'| inference, torch.compile (first call {row["first_call_seconds"]:,.0f} s) '
            f'| {shape_str(row["shape"])} | {row["ms_per_mp"]:,.0f} ms/MP | {row["speedup"]:.2f}x eager, '
            f'{row["seconds"] * 1e3:,.0f} ms/image | {row["gflops"]:.1f} | {row["fraction"]:.2f} '
            f'| {megabytes(row["peak_bytes"])} |']


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
