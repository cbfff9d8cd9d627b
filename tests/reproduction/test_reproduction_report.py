"""dsmnet_arch.reproduction.report: the rainy inputs' scores, the tables with the protocol columns and the
verdict, and the network-level table."""
import pytest

from dsmnet_arch.metrics.protocol_metrics import (
    calculate_psnr_y_rounded,
    calculate_ssim_y_downsampled,
    calculate_ssim_y_rounded,
)
from dsmnet_arch.reproduction import layout
from dsmnet_arch.reproduction.paper import METRICS
from dsmnet_arch.reproduction.report import collect_tables, rainy_scores, render_tables

from basicsr.metrics import calculate_psnr

from conftest import download_pair, save_image


def test_tables_have_the_protocol_columns_and_the_verdict_weighs_them(tmp_path):
    out = tmp_path / 'out'
    # the rainy input of one prepared test set, 48 x 40 pixels: every metric's value computed here
    test = out / 'datasets' / 'Rain100L' / 'test'
    clean, rainy = download_pair(5)
    save_image(test / 'target' / 'a.png', clean)
    save_image(test / 'input' / 'a.png', rainy)
    layout.write_json(out / 'runs' / 'rainy_Rain100L.json', {'psnr_y': 1., 'ssim_y': .1, 'psnr_rgb': 2.,
                                                              'ssim_rgb': .2, 'images': 1})  # an older cache
    scores = rainy_scores(out, 'Rain100L')
    assert scores['psnr_y_restormer'] == pytest.approx(calculate_psnr_y_rounded(rainy, clean))
    assert scores['ssim_y_restormer'] == pytest.approx(calculate_ssim_y_rounded(rainy, clean))
    assert scores['psnr_y_rcdnet'] == pytest.approx(calculate_psnr(rainy, clean, 0, test_y_channel=True))
    assert scores['psnr_y_rcdnet'] == pytest.approx(scores['psnr_y'])  # the rcdnet family's PSNR is BasicSR's
    assert scores['ssim_y_rcdnet'] == pytest.approx(calculate_ssim_y_downsampled(rainy, clean))
    assert scores['psnr_y'] != 1.  # the older cache was recomputed

    # the paper's Rainy row as if it had been measured by Restormer's script: that protocol matches
    paper_like = dict(psnr_y_restormer=26.91, ssim_y_restormer=0.838, psnr_y=27.03, psnr_y_rcdnet=27.03)
    layout.write_json(out / 'runs' / 'rainy_Rain100L.json', dict(scores, **paper_like))
    # one run tested with all eight metrics, one tested before the protocol columns existed
    done = {m: 30. + i if m.startswith('psnr') else 0.9 for i, m in enumerate(METRICS)}
    layout.write_json(out / 'runs' / 'DSMNet_Rain100L' / 'metrics.json', dict(done, total_iter=4))
    old = {'psnr_y': 27., 'ssim_y': .8, 'psnr_rgb': 26., 'ssim_rgb': .7, 'total_iter': 4}
    layout.write_json(out / 'runs' / 'DSMNet_Rain100H' / 'metrics.json', old)
    report = collect_tables(out, {}, {'scale': 1, 'gpus': 1, 'overrides': []})
    assert report['colour_space']['matches'] == 'y_restormer'
    assert 'matches our Restormer Y scores' in report['colour_space']['verdict']
    rows = {r['label']: r for r in report['tables']['2']['rows']}
    assert rows['Rain100L']['y_restormer'] == {'psnr': done['psnr_y_restormer'], 'ssim': 0.9}
    assert rows['Rain100L']['y_rcdnet_minus_paper']['psnr'] == pytest.approx(done['psnr_y_rcdnet'] - 38.27)
    assert rows['Rain100H']['y']['psnr'] == 27. and rows['Rain100H']['y_restormer'] is None
    md = render_tables(report)
    header = ('| row | paper | ours Y | Y - paper | ours RGB | RGB - paper | ours Restormer Y | Restormer Y - paper | '
              'ours RCDNet Y | RCDNet Y - paper | experiment | status |')
    assert md.count(header) == 4
    line = next(x for x in md.splitlines() if x.startswith('| Rain100L | 38.27 / 0.982 |'))
    assert line.count('|') == 13 and f'| {done["psnr_y_restormer"]:.2f} / 0.9000 |' in line
    line = next(x for x in md.splitlines() if x.startswith('| Rain100H | 28.62 / 0.902 |'))
    assert line.startswith('| Rain100H | 28.62 / 0.902 | 27.00 / 0.8000 | -1.62 / -0.1020 | 26.00 / 0.7000 | '
                           '-2.62 / -0.2020 | - | - | - | - |')


def test_the_network_level_table_is_written_when_asked_for_or_run(tmp_path):
    out = tmp_path / 'out'
    settings = {'scale': 1, 'gpus': 1, 'overrides': []}
    assert sorted(collect_tables(out, {}, settings)['tables']) == ['2', '3', '4', '5']
    report = collect_tables(out, {}, dict(settings, table5_network_level=True))
    rows = report['tables']['5n']['rows']
    assert [r['experiment'] for r in rows] == [f'DSMNet_Rain100L_netM{i}' for i in (1, 2, 3, 4)] + ['DSMNet_Rain100L']
    assert rows[0]['paper'] == {'psnr': 36.15, 'ssim': 0.9757} and rows[0]['status'] == 'not finished'
    md = render_tables(report)
    assert md.index('## Table 5: connections inside the MAB') < md.index('## Not in the paper: Table 5 read as') < (
        md.index('## Table 5, network-level reading (ours, not an experiment of the paper)'))

    done = {m: 30. if m.startswith('psnr') else 0.9 for m in METRICS}
    layout.write_json(out / 'runs' / 'DSMNet_Rain100L_netM2' / 'metrics.json', dict(done, total_iter=4))
    report = collect_tables(out, {}, settings)  # a run of its own has finished: shown without the flag
    assert report['tables']['5n']['rows'][1]['status'] == 'done' and report['tables']['5n']['ours']
