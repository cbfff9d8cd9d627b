"""scripts/benchmark.py --quick: every measurement runs and the JSON and table hold sane figures."""
import importlib.util
import json
import os

import pytest
import torch

from dsmnet_arch.tiling import count_tiles

from conftest import REPO


def load_benchmark_script():
    spec = importlib.util.spec_from_file_location('benchmark', os.path.join(REPO, 'scripts', 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_least_work_tile_covers_large_image_with_fewest_pixels():
    script = load_benchmark_script()
    # 12 MP in 3 x 4 tiles of 1048 (1.10x pixels); no other tile up to 1088 computes fewer
    assert script.least_work_tile(3000, 4000, 1088, 64, 8) == 1055
    assert count_tiles(3000, 4000, 1055, 64, 8) == 12
    # the default --tile 640: 8 x 6 tiles of 560 x 560 (1.25x pixels)
    assert script.least_work_tile(3000, 4000, script.PRESETS['full']['tile'], 64, 8) == 567
    assert count_tiles(3000, 4000, 567, 64, 8) == 48


def test_quick_run_writes_json_and_table(tmp_path, capsys):
    script = load_benchmark_script()
    path = tmp_path / 'out' / 'bench.json'
    script.main(['--quick', '--repeats', '1', '--json', str(path)])
    table = capsys.readouterr().out
    r = json.loads(path.read_text())
    cfg = script.PRESETS['quick']

    h = r['header']
    assert (h['device'], h['precision'], h['preset'], h['threads']) == ('cpu', 'fp32', 'quick', torch.get_num_threads())
    assert h['command'] == f'python scripts/benchmark.py --quick --repeats 1 --json {path}'
    assert h['malloc'] in ('keeps freed memory', 'system default')

    for key, shape in (('train', [cfg['batch'], cfg['num_feat'], cfg['patch'], cfg['patch']]),
                       ('inference', [1, cfg['num_feat'], cfg['reference_side'], cfg['reference_side']])):
        ref = r['reference'][key]
        assert ref['shape'] == shape and ref['memory_format'] in script.MEMORY_FORMATS
        assert ref['seconds'] > 0 and ref['gflops'] > 0

    t = r['train_step']
    assert t['shape'] == [cfg['batch'], 3, cfg['patch'], cfg['patch']]
    assert t['patches_per_s'] == pytest.approx(cfg['batch'] / t['seconds'])
    # forward + backward: about 3x the forward FLOPs (torch counts a convolution's input and
    # weight gradients as about one forward each)
    forward = script.spec_flops(cfg['num_feat'], t['shape'], train=False) / 1e9
    assert 2.9 * forward < t['gflop'] < 3.1 * forward
    assert t['gflops'] == pytest.approx(t['gflop'] / t['seconds'])
    assert t['fraction'] == pytest.approx(t['gflops'] / r['reference']['train']['gflops'])

    assert [row['shape'][-1] for row in r['inference']] == list(cfg['sides'])
    for row in r['inference']:
        assert row['ms_per_mp'] == pytest.approx(row['seconds'] * 1e9 / row['shape'][-1]**2)
        assert row['fraction'] == pytest.approx(row['gflops'] / r['reference']['inference']['gflops'])
        assert row['peak_bytes'] is None or row['peak_bytes'] >= 0

    tiled = r['tiled']
    height, width = cfg['large']
    assert tiled['shape'] == [1, 3, height, width] and 1 < tiled['tiles'] <= count_tiles(height, width, 32, cfg['overlap'], 4)
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
    for name in ('reference 3x3 conv, fwd + bwd', 'training step', 'inference, tiled', 'data, LMDB',
                 'BasicSR training, LMDB, 1 worker, 3 iterations'):
        assert f'| {name}' in table
    assert table.rstrip().endswith(f'JSON: {path}')
