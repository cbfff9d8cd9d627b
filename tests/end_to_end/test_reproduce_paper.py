"""scripts/reproduce_paper.py on the CPU (dsmnet_arch.reproduction): the four downloads in their native layouts
in, the paper's tables out.

The downloads are tiny (a few 40x48 pairs per split, laid out as each release is, like the
preparation tests' fixtures), the network narrow (width 16, 2 levels) and --scale tiny, so every
one of the 15 experiments trains for a few iterations through dsmnet_arch/train.py and is
tested through dsmnet_arch/test.py.
"""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dsmnet_arch.reproduction import layout
from dsmnet_arch.reproduction.cli import main

from conftest import REPRODUCE_EXPERIMENTS, REPRODUCE_SCRIPT, REPRODUCE_SMALL, download_pair, save_image

pytestmark = pytest.mark.slow  # the whole reproduction: 15 experiments, each trained and tested in subprocesses

SMOKE = ['--scale', '0.002', '--jobs', '2'] + REPRODUCE_SMALL  # 1 to 4 iterations per experiment


# Put on PYTHONPATH, this sitecustomize makes the training of one experiment die with SIGKILL at
# the start of an iteration: the process alone ("self"), or its whole process group ("group"),
# the driver and every other run included, as a kill -9 of the job would.
KILL_HOOK = textwrap.dedent('''
    import os, signal, sys
    target = os.environ.get('REPRODUCE_TEST_KILL')  # experiment:iteration:self|group
    if target and sys.argv[0].endswith('train.py'):
        name, at, whom = target.split(':')
        if any(arg.endswith(f'train_{name}.yml') for arg in sys.argv):
            from dsmnet_arch.models.derain_model import DerainModel
            step = DerainModel.optimize_parameters
            def optimize_parameters(self, current_iter):
                if current_iter == int(at):
                    os.killpg(0, signal.SIGKILL) if whom == 'group' else os.kill(os.getpid(), signal.SIGKILL)
                step(self, current_iter)
            DerainModel.optimize_parameters = optimize_parameters
''')


def make_downloads(root):
    """``root/<dataset>/`` as each release is laid out (docs/datasets.md), a few pairs per split."""
    for dataset, train, seed in (('Rain100L', 'RainTrainL', 0), ('Rain100H', 'RainTrainH', 100)):
        for i in (1, 2, 3):
            clean, rainy = download_pair(seed + i)
            save_image(root / dataset / train / f'rain-{i}.png', rainy)
            save_image(root / dataset / train / f'norain-{i}.png', clean)
        for i in (1, 2):
            clean, rainy = download_pair(seed + 10 + i)
            save_image(root / dataset / dataset / 'rainy' / f'rain-{i:03d}.png', rainy)
            save_image(root / dataset / dataset / f'norain-{i:03d}.png', clean)
    for split, seeds in (('training', (20, 21)), ('test_syn', (22, 23))):
        for seed in seeds:  # one jpg per pair: clean on the left, rainy on the right
            save_image(root / 'Rain800' / split / f'{seed}.jpg', np.concatenate(download_pair(seed), axis=1))
    for split, numbers in (('Rain12600', (1, 2)), ('Rain1400', (901, ))):
        for n in numbers:  # several rainy images share one clean image
            clean, _ = download_pair(n)
            save_image(root / 'Rain1400' / split / 'ground_truth' / f'{n}.jpg', clean)
            for m in (1, 2):
                save_image(root / 'Rain1400' / split / 'rainy_image' / f'{n}_{m}.jpg',
                           download_pair(n + 7 * m)[1] // 2 + clean // 2)
    return root


def cli(args, env=None):
    """The script as a program, in its own process group (a kill of the group spares pytest)."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run([sys.executable, REPRODUCE_SCRIPT, *args], env=full_env, capture_output=True, text=True,
                          start_new_session=True, timeout=600)


def _tables(out):
    return json.loads((out / 'tables.json').read_text())


def test_all_four_tables_end_to_end_killed_resumed_and_skipped(tmp_path, capsys, monkeypatch):
    data = make_downloads(tmp_path / 'downloads')
    out = tmp_path / 'out'
    argv = ['--data', str(data), '--out', str(out)] + SMOKE
    hook = tmp_path / 'hook'
    hook.mkdir()
    (hook / 'sitecustomize.py').write_text(KILL_HOOK)

    # 1. The whole job is killed (SIGKILL, driver included) when DSMNet_Rain100H reaches iteration 3.
    proc = cli(argv, env={'PYTHONPATH': str(hook), 'REPRODUCE_TEST_KILL': 'DSMNet_Rain100H:3:group'})
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert all((out / 'datasets' / d / s / 'prepared.json').is_file()
               for d in ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400') for s in ('train', 'test'))
    assert layout.training_states(out, 'DSMNet_Rain100H') == [1, 2]
    assert not (out / 'runs' / 'DSMNet_Rain100H' / 'metrics.json').exists()
    assert main(argv + ['--dry-run']) == 0
    text = capsys.readouterr().out
    assert re.search(r'DSMNet_Rain100H  tables 2  Rain100H  4 iterations \(3 pairs\)  resumes from iteration 2', text)
    assert 'prepare ' not in text

    # 2. The same command again: it resumes; one training is killed (that process alone), is
    # reported, and all the others still run.
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.setenv('PYTHONPATH', str(hook))
    monkeypatch.setenv('REPRODUCE_TEST_KILL', 'DSMNet_Rain100L_M1:3:self')
    assert main(argv) == 1
    text = capsys.readouterr().out
    assert 'prepare ' not in text  # prepared before
    assert re.search(r'train DSMNet_Rain100H \(table 2\): 4 iterations, from iteration 2', text)
    train_log = max((out / 'experiments' / 'DSMNet_Rain100H').glob('train_DSMNet_Rain100H_*.log'))
    assert 'Resuming training from epoch: 0, iter: 2.' in train_log.read_text()
    assert re.search(r'FAILED DSMNet_Rain100L_M1 \(table 5\): training killed by signal 9: .*\(log: .*train\.log\)',
                     text)
    assert re.search(r'1 failed .*\n  DSMNet_Rain100L_M1: training killed by signal 9', text)
    rows = {(n, r['label']): r for n, t in _tables(out)['tables'].items() for r in t['rows']}
    assert rows[('5', 'M1')]['status'].startswith('failed: training killed by signal 9')
    assert all(r['status'] == 'done' for key, r in rows.items() if key != ('5', 'M1'))

    # 3. Again, without the kill: only the failed experiment runs, from its last training state.
    monkeypatch.delenv('REPRODUCE_TEST_KILL')
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert re.findall(r'^train (\S+)', text, re.M) == ['DSMNet_Rain100L_M1']
    assert 'from iteration 2' in text and text.count('skip ') == REPRODUCE_EXPERIMENTS - 1

    report = _tables(out)
    assert sorted(report['tables']) == ['2', '3', '4', '5']
    assert [len(t['rows']) for t in report['tables'].values()] == [4, 6, 3, 5]
    for table in report['tables'].values():
        for row in table['rows']:
            assert row['status'] == 'done' and row['total_iter'] >= 1
            for space in ('y', 'rgb'):
                assert 0 < row[space]['psnr'] < 100 and 0 < row[space]['ssim'] <= 1
                assert row[f'{space}_minus_paper']['psnr'] == pytest.approx(row[space]['psnr'] - row['paper']['psnr'])
    rows = {(n, r['label']): r for n, t in report['tables'].items() for r in t['rows']}
    assert rows[('4', 'n = 8')]['experiment'] == rows[('5', 'M5')]['experiment'] == 'DSMNet_Rain100L'
    assert rows[('3', 'CA+SA')]['y'] == rows[('2', 'Rain100L')]['y']  # one run, not four
    assert rows[('5', 'M1')]['paper'] == {'psnr': 36.15, 'ssim': 0.9757}
    assert rows[('2', 'Rain100L')]['total_iter'] == 4  # the paper's epochs for 3 pairs: 125,000 x 3 / 200, x 0.002
    rainy = report['colour_space']['rainy_input']
    assert sorted(rainy) == ['Rain100H', 'Rain100L', 'Rain1400', 'Rain800']
    assert rainy['Rain1400']['images'] == 2 and report['colour_space']['matches'] is None  # not the paper's images
    md = (out / 'tables.md').read_text()
    for title in ('Which colour space', 'Table 2', 'Table 3', 'Table 4', 'Table 5'):
        assert f'## {title}' in md
    assert '| M1 | 36.15 / 0.9757 |' in md and '| Rain800 | 2 | 21.16 / 0.652 |' in md
    assert 'not finished' not in md and 'failed' not in md and 'Not the paper\'s settings' in md

    # 4. And again: everything is finished, nothing runs.
    before = {p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('*.json')}
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count('skip ') == REPRODUCE_EXPERIMENTS and not re.search(r'^(train|test|prepare) ', text, re.M)
    assert {p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('*.json')} == before
