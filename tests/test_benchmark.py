"""scripts/benchmark.py --quick (dsmnet_arch.benchmarks): every measurement runs and the JSON and table hold sane
figures."""
import json
import math

import pytest
import torch

from dsmnet_arch.benchmarks.cli import PRESETS, main, parse_args, run
from dsmnet_arch.benchmarks.inference import least_work_tile
from dsmnet_arch.benchmarks.reference import MEMORY_FORMATS, spec_flops
from dsmnet_arch.benchmarks.report import table as results_table
from dsmnet_arch.benchmarks.timing import duration
from dsmnet_arch.benchmarks.training import make_training_step
from dsmnet_arch.tiling import count_tiles


def computed_pixels(tile, height, width, overlap, multiple):
    """Pixels a tiled pass computes, from the tiling rules of docs/inference.md (not from the code):
    a tile side matches the image's remainder modulo the padding multiple, and the fewest tiles of
    that side that overlap by at least ``overlap`` cover each axis."""
    total = 1
    for length in (height, width):
        side = length if tile >= length else tile - (tile - length) % multiple
        count = 1 if side >= length else math.ceil((length - overlap) / (side - overlap))
        total *= count * side
    return total


@pytest.mark.parametrize('largest, layout', [(1088, (1048, 1048, 3, 4)), (640, (560, 560, 6, 8))])
def test_least_work_tile_covers_large_image_with_fewest_pixels(largest, layout):
    tile = least_work_tile(3000, 4000, largest, 64, 8)
    candidates = range(2 * 64 + 8, largest + 1)
    fewest = min(computed_pixels(t, 3000, 4000, 64, 8) for t in candidates)
    assert computed_pixels(tile, 3000, 4000, 64, 8) == fewest
    assert tile == max(t for t in candidates if computed_pixels(t, 3000, 4000, 64, 8) == fewest)  # ties: larger
    side_h, side_w, rows, cols = layout  # 12 MP in 3 x 4 tiles of 1048 (1.10x), or 6 x 8 of 560 (1.25x)
    assert computed_pixels(tile, 3000, 4000, 64, 8) == rows * side_h * cols * side_w
    assert count_tiles(3000, 4000, tile, 64, 8) == rows * cols


def test_quick_run_writes_json_and_table(tmp_path, capsys):
    path = tmp_path / 'out' / 'bench.json'
    main(['--quick', '--repeats', '1', '--json', str(path)])
    table = capsys.readouterr().out
    r = json.loads(path.read_text())
    cfg = PRESETS['quick']

    h = r['header']
    assert (h['device'], h['precision'], h['preset'], h['threads']) == ('cpu', 'fp32', 'quick', torch.get_num_threads())
    assert h['command'] == f'python scripts/benchmark.py --quick --repeats 1 --json {path}'
    assert h['malloc'] in ('keeps freed memory', 'system default')

    for key, shape in (('train', [cfg['batch'], cfg['num_feat'], cfg['patch'], cfg['patch']]),
                       ('inference', [1, cfg['num_feat'], cfg['reference_side'], cfg['reference_side']])):
        ref = r['reference'][key]
        assert ref['shape'] == shape and ref['memory_format'] in MEMORY_FORMATS
        assert ref['seconds'] > 0 and ref['gflops'] > 0

    t = r['train_step']
    assert t['shape'] == [cfg['batch'], 3, cfg['patch'], cfg['patch']]
    assert t['patches_per_s'] == pytest.approx(cfg['batch'] / t['seconds'])
    # forward + backward: about 3x the forward FLOPs (torch counts a convolution's input and
    # weight gradients as about one forward each)
    forward = spec_flops(cfg['num_feat'], t['shape'], train=False) / 1e9
    assert 2.9 * forward < t['gflop'] < 3.1 * forward
    assert t['gflops'] == pytest.approx(t['gflop'] / t['seconds'])
    assert t['fraction'] == pytest.approx(t['gflops'] / r['reference']['train']['gflops'])
    assert t['iters_per_s'] == pytest.approx(1 / t['seconds']) and t['first_call_seconds'] is None
    assert t['peak_bytes'] is None or t['peak_bytes'] >= 0
    # the paper's protocol: total_iter of each options file x the step's seconds
    assert [p['dataset'] for p in r['protocol']] == ['Rain100H', 'Rain100L', 'Rain800', 'Rain1400']
    assert r['protocol'][0]['total_iter'] == 1125000 and r['protocol'][0]['batch'] == 32
    for p in r['protocol']:
        assert p['seconds'] == pytest.approx(p['total_iter'] * t['seconds'])

    assert [row['shape'][-1] for row in r['inference']] == list(cfg['sides'])
    for row in r['inference']:
        assert row['ms_per_mp'] == pytest.approx(row['seconds'] * 1e9 / row['shape'][-1]**2)
        assert row['fraction'] == pytest.approx(row['gflops'] / r['reference']['inference']['gflops'])
        assert row['peak_bytes'] is None or row['peak_bytes'] >= 0

    tiled = r['tiled']
    height, width = cfg['large']
    assert tiled['shape'] == [1, 3, height, width]
    assert 1 < tiled['tiles'] <= count_tiles(height, width, 32, cfg['overlap'], 4)
    assert tiled['computed_pixels_ratio'] >= 1 and tiled['ms_per_mp'] > 0
    assert tiled['ratio_to_largest_whole'] == pytest.approx(tiled['ms_per_mp'] / r['inference'][-1]['ms_per_mp'])

    d = r['data']
    assert d['consumed_per_s'] == t['patches_per_s']
    for backend in ('disk', 'lmdb'):
        rate = d[backend]['samples_per_s']
        assert rate > 0 and d[backend]['share'] == pytest.approx(d['consumed_per_s'] / (d['consumed_per_s'] + rate))

    # BasicSR's own log of a short training run on the LMDB
    b = r['basicsr']
    assert (b['iterations'], b['batch'], b['workers']) == (cfg['basicsr_iters'], cfg['batch'], 1)
    assert 0 <= b['data_seconds_per_iter'] < b['seconds_per_iter'] and b['first_iter_seconds'] > 0
    assert b['share'] == pytest.approx(b['data_seconds_per_iter'] / b['seconds_per_iter'])
    assert 0 <= b['share_after_first'] < 1

    assert '| measurement | shape | time | rate | GFLOP/s | of reference | peak memory |' in table
    for name in ('reference 3x3 conv, fwd + bwd', 'training step', 'paper protocol, Rain100H: 1,125,000 iterations',
                 'inference, tiled', 'data, LMDB', 'BasicSR training, LMDB, 1 worker, 3 iterations'):
        assert f'| {name}' in table
    assert table.rstrip().endswith(f'JSON: {path}')


def test_gpu_header_compiled_rows_and_no_data_in_the_table():
    """The rows only a GPU or --compile run prints, from a run's results (no GPU needed to format them)."""
    reference = dict(shape=[1, 32, 512, 512], memory_format='channels_last', seconds=0.002, gflops=9000.0)
    train = dict(shape=[32, 3, 64, 64], seconds=0.1, iters_per_s=10.0, patches_per_s=320.0, gflop=1200.0,
                 gflops=12000.0, fraction=0.8, peak_bytes=3 * 2**30, first_call_seconds=None)
    whole = dict(shape=[1, 3, 512, 512], seconds=0.01, ms_per_mp=38.1, gflops=8000.0, fraction=0.9,
                 peak_bytes=2**30, first_call_seconds=None)
    results = dict(
        header=dict(date='today', command='python scripts/benchmark.py --device cuda --compile --no-data',
                    device='cuda', device_name='A GPU', precision='bf16', threads=16, torch='2.x', repeats=3,
                    load_average=None, malloc='keeps freed memory', glibc_tunables=None,
                    gpu=dict(memory_bytes=80 * 2**30, capability='8.0', cuda='12.x', cudnn=90100,
                             cudnn_benchmark=True, tf32_convolutions=True)),
        reference=dict(train=reference, inference=reference), train_step=train,
        protocol=[dict(dataset='Rain100H', total_iter=1125000, batch=32, seconds=112500.0)], inference=[whole],
        tiled=dict(shape=[1, 3, 3000, 4000], tile=[560, 560], batch=4, overlap=64, tiles=48,
                   computed_pixels_ratio=1.25, seconds=1.0, ms_per_mp=83.3, ratio_to_largest_whole=2.2,
                   peak_bytes=2**31),
        compiled=dict(train_step=dict(train, seconds=0.08, iters_per_s=12.5, speedup=1.25, first_call_seconds=95.0),
                      inference=dict(whole, speedup=1.1, first_call_seconds=40.0)))
    table = results_table(results)
    assert '- GPU: 80 GiB, compute capability 8.0, CUDA 12.x, cuDNN 90100, cudnn.benchmark True, TF32 ' in table
    assert '| 0.10 s | 10.00 it/s, 320.0 patches/s | 12000.0 | 0.80 | 3,072 MiB |' in table
    assert '| paper protocol, Rain100H: 1,125,000 iterations x the step above | batch 32 | 31.2 h |' in table
    assert '48 tiles of 560 x 560 in batches of 4' in table and 'data, ' not in table
    assert '| training step, torch.compile (first step 95 s) | 32 x 3 x 64 x 64 | 0.08 s | 1.25x eager, ' in table
    assert '| inference, torch.compile (first call 40 s) | 1 x 3 x 512 x 512 | 38 ms/MP | 1.10x eager, ' in table


def test_fp16_and_cuda_need_a_gpu(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--precision', 'fp16'])
    assert '--precision fp16 needs --device cuda' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='--device cuda, but PyTorch sees no CUDA device'):
            run(parse_args(['--device', 'cuda', '--quick']))


@pytest.mark.parametrize('precision, scaled', [('fp16', True), ('bf16', False), ('fp32', False), (None, False)])
def test_the_timed_training_step_scales_fp16_losses_as_training_does(monkeypatch, precision, scaled):
    """The step benchmark.py and the reproduction's estimate time runs fp16 through a gradient scaler, as
    DerainModel's training does (scale, backward, scaler step, update), and the others without one."""
    calls = []

    class Scaler(torch.amp.GradScaler):
        def scale(self, outputs):
            calls.append('scale')
            return super().scale(outputs)

        def step(self, optimizer, *args, **kwargs):
            calls.append('step')
            return super().step(optimizer, *args, **kwargs)

        def update(self, new_scale=None):
            calls.append('update')
            return super().update(new_scale)

    monkeypatch.setattr(torch.amp, 'GradScaler', Scaler)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    before = [p.detach().clone() for p in net.parameters()]
    lq = torch.rand(2, 3, 8, 8)
    step = make_training_step(net, torch.nn.MSELoss(), torch.optim.Adam(net.parameters(), lr=1e-3), lq, lq * 0.5,
                              precision)
    step()
    step()
    assert calls == (['scale', 'step', 'update'] * 2 if scaled else [])
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))  # the optimizer stepped


def test_one_duration_for_the_benchmarks_the_estimate_and_the_gpu_summary():
    seconds = (0, 12.4, 250, 3599, 3600, 112500, 47.9 * 3600, 48 * 3600, 2.3 * 86400)
    assert [duration(s) for s in seconds] == ['0 s', '12 s', '4 min 10 s', '59 min 59 s', '1.0 h', '31.2 h',
                                              '47.9 h', '2.0 days', '2.3 days']
