"""dsmnet-score (python -m dsmnet_arch.score): pairing, per-image CSV, means, several sets, and its refusals.

The images are one-channel 8-bit PNGs, which every protocol scores as they are (their own Y), so each
pair's PSNR is known by hand: a result that differs from its target by 1 in ``k`` of ``N`` pixels has
PSNR ``10 log10(255^2 N / k)``.
"""
import csv
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dsmnet_arch import score

from conftest import REPO

SIZE = 16  # pixels per side (at least SSIM's 11)


def psnr_of(k):
    return 10 * math.log10(255**2 * SIZE * SIZE / k)


def target_image(seed):
    return np.random.default_rng(seed).integers(10, 240, (SIZE, SIZE), dtype=np.uint8)


def result_image(target, k):
    """``target`` plus 1 in its first ``k`` pixels."""
    result = target.copy().reshape(-1)
    result[:k] += 1
    return result.reshape(target.shape)


def write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_set(root, numbers, suffix='', seed=0):
    """``root/{results,targets}``: target ``<n>.png`` and result ``<n><suffix>.png`` off in ``n`` pixels."""
    for n in numbers:
        target = target_image(seed + n)
        write(root / 'targets' / f'{n}.png', target)
        write(root / 'results' / f'{n}{suffix}.png', result_image(target, n))
    return str(root / 'results'), str(root / 'targets')


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def run(argv, capsys):
    status = score.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_scores_by_name_with_basicsr_suffix_writes_csv_and_mean(tmp_path, capsys):
    results, targets = make_set(tmp_path, (1, 2, 10), suffix='_test_DSMNet_Rain200H')
    argv = [results, targets, '--suffix', '_test_DSMNet_Rain200H', '--protocol', 'restormer', 'rcdnet', 'basicsr',
            '--csv', str(tmp_path / 'scores.csv'), '--json', str(tmp_path / 'means.json')]
    status, out, _ = run(argv, capsys)
    assert status == 0
    rows = read_csv(tmp_path / 'scores.csv')
    assert [(os.path.basename(r['result']), os.path.basename(r['target'])) for r in rows] == [
        ('10_test_DSMNet_Rain200H.png', '10.png'), ('1_test_DSMNet_Rain200H.png', '1.png'),
        ('2_test_DSMNet_Rain200H.png', '2.png')]
    for row in rows:
        k = int(os.path.basename(row['target'])[:-4])
        assert row['set'] == 'results'
        for protocol in ('restormer', 'rcdnet', 'basicsr'):  # a gray image is its own Y in all three
            assert float(row[f'psnr_{protocol}']) == pytest.approx(psnr_of(k), abs=1e-4)
            assert 0.9 < float(row[f'ssim_{protocol}']) < 1
    means = json.loads((tmp_path / 'means.json').read_text())
    expected = np.mean([psnr_of(k) for k in (1, 2, 10)])
    assert means['sets']['results']['images'] == 3 and means['pairing'] == 'name'
    assert means['sets']['results']['psnr_restormer'] == pytest.approx(expected, abs=1e-4)
    assert 'average_over_sets' not in means
    assert f'{expected:.2f}' in out.splitlines()[1]


def test_pairing_by_sorted_order_differs_from_pairing_by_name(tmp_path, capsys):
    # BasicSR's names sort differently from the numbers: 10_x.png < 1_x.png < 2_x.png, but 1.png < 10.png < 2.png
    results, targets = make_set(tmp_path, (1, 2, 10), suffix='_x')
    by_name, by_order = tmp_path / 'name.csv', tmp_path / 'order.csv'
    assert run([results, targets, '--suffix', '_x', '--csv', str(by_name)], capsys)[0] == 0
    assert run([results, targets, '--pairing', 'order', '--csv', str(by_order)], capsys)[0] == 0
    pairs = {os.path.basename(r['result']): os.path.basename(r['target']) for r in read_csv(by_order)}
    assert pairs == {'10_x.png': '1.png', '1_x.png': '10.png', '2_x.png': '2.png'}  # as the MATLAB script pairs them
    name_rows, order_rows = read_csv(by_name), read_csv(by_order)
    assert {os.path.basename(r['result']): os.path.basename(r['target']) for r in name_rows} == {
        '10_x.png': '10.png', '1_x.png': '1.png', '2_x.png': '2.png'}
    psnr = {os.path.basename(r['result']): float(r['psnr_restormer']) for r in order_rows}
    assert psnr['2_x.png'] == pytest.approx(psnr_of(2), abs=1e-4)
    assert psnr['10_x.png'] < 30 and psnr['1_x.png'] < 30  # scored against another image


def test_matlab_listing_puts_jpg_before_png():
    assert score.matlab_order(['b.png', 'a.png', 'c.jpg', 'd.bmp']) == ['c.jpg', 'a.png', 'b.png', 'd.bmp']


def test_several_sets_print_the_average_over_sets(tmp_path, capsys):
    first, second = make_set(tmp_path / 'A', (1, 4)), make_set(tmp_path / 'B', (2, ), seed=50)
    status, out, _ = run(['--set', 'Test100', *first, '--set', 'Rain100H', *second,
                          '--json', str(tmp_path / 'means.json')], capsys)
    assert status == 0
    means = json.loads((tmp_path / 'means.json').read_text())
    set_means = [np.mean([psnr_of(1), psnr_of(4)]), psnr_of(2)]
    assert [means['sets'][s]['psnr_restormer'] for s in ('Test100', 'Rain100H')] == pytest.approx(set_means, abs=1e-4)
    assert means['average_over_sets']['psnr_restormer'] == pytest.approx(np.mean(set_means), abs=1e-4)
    assert [line.split()[0] for line in out.splitlines()] == ['set', 'Test100', 'Rain100H', 'average']
    assert f'{np.mean(set_means):.2f}' in out.splitlines()[-1]


def test_problems_are_one_line_each_naming_the_file_and_nothing_is_written(tmp_path, capsys):
    results, targets = make_set(tmp_path, (1, 2, 3, 4))
    os.remove(os.path.join(targets, '2.png'))  # a missing target
    write(os.path.join(results, '3.png'), np.zeros((SIZE, SIZE + 1), np.uint8))  # a size mismatch
    with open(os.path.join(results, '4.png'), 'wb') as f:  # an unreadable file
        f.write(b'not a png')
    old = tmp_path / 'scores.csv'
    old.write_text('earlier scores\n')
    status, out, err = run([results, targets, '--csv', str(old), '--json', str(tmp_path / 'means.json')], capsys)
    assert status == 1 and out == ''
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith('error: ') for line in lines)
    assert any(f'no target for result {os.path.join(results, "2.png")}' in line for line in lines)
    assert any(f'result {os.path.join(results, "3.png")} is {SIZE}x{SIZE + 1}x1, target '
               f'{os.path.join(targets, "3.png")} is {SIZE}x{SIZE}x1' in line for line in lines)
    assert any(f'cannot read {os.path.join(results, "4.png")}' in line for line in lines)
    assert old.read_text() == 'earlier scores\n' and not (tmp_path / 'means.json').exists()
    assert sorted(os.listdir(tmp_path)) == ['results', 'scores.csv', 'targets']  # no temporary file left


def test_refusals_of_folders_counts_and_bit_depth(tmp_path, capsys):
    results, targets = make_set(tmp_path, (1, 2, 3))
    os.remove(os.path.join(targets, '3.png'))
    status, _, err = run([results, targets, '--pairing', 'order'], capsys)
    assert status == 1 and err.strip() == (f'error: {results} has 3 images and {targets} has 2: '
                                           f'{os.path.join(results, "3.png")} has no partner')
    status, _, err = run([results, str(tmp_path / 'nowhere')], capsys)
    assert status == 1 and err.strip() == f'error: targets folder {tmp_path / "nowhere"} not found'
    write(os.path.join(targets, '3.png'), target_image(3).astype(np.uint16) * 257)
    status, _, err = run([results, targets], capsys)
    assert status == 1 and err.strip() == (f'error: {os.path.join(targets, "3.png")} is uint16, not 8-bit: '
                                           'the protocols score 8-bit files')
    status, _, err = run([results, targets, '--csv', str(tmp_path / 'no' / 'scores.csv')], capsys)
    assert status == 1 and err.strip() == f'error: --csv {tmp_path / "no" / "scores.csv"}: folder {tmp_path / "no"} ' \
        'not found'


def test_progress_bar_names_the_set(tmp_path, capsys):
    results, targets = make_set(tmp_path, (1, 2))
    score.score_sets([('Rain100L', results, targets)], ['restormer'], progress=False)
    assert 'Rain100L: 100%' in capsys.readouterr().err


@pytest.mark.slow  # a subprocess: 5 s
def test_runs_as_a_module(tmp_path):
    results, targets = make_set(tmp_path, (1, ))
    proc = subprocess.run([sys.executable, '-m', 'dsmnet_arch.score', results, targets, '--protocol', 'rcdnet'],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr
    assert f'{psnr_of(1):.2f}' in proc.stdout.splitlines()[1]
