"""scripts/benchmark.py --quick (dsmnet_arch.benchmarks.cli): every measurement runs and the JSON and table hold sane
figures; fp16 and --device cuda need a GPU."""
import json

import pytest
import torch

from dsmnet_arch.benchmarks.cli import PRESETS, main, parse_args, run
from dsmnet_arch.benchmarks.reference import MEMORY_FORMATS, spec_flops
from dsmnet_arch.tiling import count_tiles


@pytest.mark.slow  # every measurement, a BasicSR training among them: 14 s
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

    # the profiles: operator time outside convolutions, a convolution among the top operators
    for key in ('train_step', 'inference'):
        prof = r['profile'][key]
        assert prof['seconds'] > 0 and 0 < prof['outside_convolutions'] < 1
        assert any('conv' in op['name'] for op in prof['top'])
        assert sum(op['share'] for op in prof['top']) <= 1 + 1e-9
    assert r['profile']['inference']['shape'] == [1, 3, cfg['reference_side'], cfg['reference_side']]
    assert r['header']['vector_extensions']['torch_capability'] == torch.backends.cpu.get_cpu_capability()
    assert '- vector extensions: ' in table and '| training step | 2 x 3 x 32 x 32 |' in table

    assert '| measurement | shape | time | rate | GFLOP/s | of reference | peak memory |' in table
    for name in ('reference 3x3 conv, fwd + bwd', 'training step', 'paper protocol, Rain100H: 1,125,000 iterations',
                 'inference, tiled', 'data, LMDB', 'BasicSR training, LMDB, 1 worker, 3 iterations'):
        assert f'| {name}' in table
    assert table.rstrip().endswith(f'JSON: {path}')


def test_fp16_and_cuda_need_a_gpu(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--precision', 'fp16'])
    assert '--precision fp16 needs --device cuda' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='--device cuda, but PyTorch sees no CUDA device'):
            run(parse_args(['--device', 'cuda', '--quick']))


@pytest.mark.slow  # a whole quick run: 6 s
def test_a_profiler_that_fails_costs_no_measurement(tmp_path, capsys, monkeypatch):
    def no_profiler(fn, device):
        raise RuntimeError('CUPTI could not be loaded\nsecond line')

    monkeypatch.setattr('dsmnet_arch.benchmarks.cli.operator_times', no_profiler)
    path = tmp_path / 'bench.json'
    main(['--quick', '--no-data', '--repeats', '1', '--json', str(path)])
    r = json.loads(path.read_text())
    assert r['profile'] == {'error': 'RuntimeError: CUPTI could not be loaded'}
    assert r['header']['complete'] and r['train_step']['seconds'] > 0 and r['tiled']['seconds'] > 0
    assert 'Profile: the profiler failed (RuntimeError: CUPTI could not be loaded)' in capsys.readouterr().out
