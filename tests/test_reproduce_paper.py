"""scripts/reproduce_paper.py on the CPU: the four downloads in their native layouts in, the paper's tables out.

The downloads are tiny (a few 40x48 pairs per split, laid out as each release is, like the
preparation tests' fixtures), the network narrow (width 16, 2 levels) and --scale tiny, so every
one of the 15 experiments trains for a few iterations through dsmnet_arch/train.py and is
tested through dsmnet_arch/test.py.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import yaml

from dsmnet_arch.metrics.protocol_metrics import (
    calculate_psnr_y_rounded,
    calculate_ssim_y_downsampled,
    calculate_ssim_y_rounded,
)

from basicsr.metrics import calculate_psnr

from conftest import REPO

SCRIPT = os.path.join(REPO, 'scripts', 'reproduce_paper.py')
H, W = 40, 48
SMALL = ['--override', 'network_g:num_feat=16', '--override', 'network_g:num_levels=2',
         '--override', 'datasets:train:gt_size=32', '--override', 'datasets:train:num_worker_per_gpu=0',
         '--override', 'logger:use_tb_logger=false', '--override', 'val:save_img=false']
SMOKE = ['--scale', '0.002', '--jobs', '2'] + SMALL  # 1 to 4 iterations per experiment
EXPERIMENTS = 15  # Table 2: 4; Table 3: 5 more; Table 4: 2 more; Table 5: 4 more (the default model is shared)

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


@pytest.fixture(scope='module')
def reproduce():
    spec = importlib.util.spec_from_file_location('reproduce_paper', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair(seed, h=H, w=W):
    """A smooth clean image and the same with bright diagonal streaks (uint8 BGR)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    clean = rng.uniform(0.2, 0.7, (1, 1, 3)) + 0.1 * np.sin((xx + yy * rng.uniform(0.5, 2))[..., None] / 5)
    rainy = clean + ((xx + 2 * yy + seed) % 7 == 0)[..., None] * 0.3
    return [(np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in (clean, rainy)]


def save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_downloads(root):
    """``root/<dataset>/`` as each release is laid out (docs/datasets.md), a few pairs per split."""
    for dataset, train, seed in (('Rain100L', 'RainTrainL', 0), ('Rain100H', 'RainTrainH', 100)):
        for i in (1, 2, 3):
            clean, rainy = pair(seed + i)
            save(root / dataset / train / f'rain-{i}.png', rainy)
            save(root / dataset / train / f'norain-{i}.png', clean)
        for i in (1, 2):
            clean, rainy = pair(seed + 10 + i)
            save(root / dataset / dataset / 'rainy' / f'rain-{i:03d}.png', rainy)
            save(root / dataset / dataset / f'norain-{i:03d}.png', clean)
    for split, seeds in (('training', (20, 21)), ('test_syn', (22, 23))):
        for seed in seeds:  # one jpg per pair: clean on the left, rainy on the right
            save(root / 'Rain800' / split / f'{seed}.jpg', np.concatenate(pair(seed), axis=1))
    for split, numbers in (('Rain12600', (1, 2)), ('Rain1400', (901, ))):
        for n in numbers:  # several rainy images share one clean image
            clean, _ = pair(n)
            save(root / 'Rain1400' / split / 'ground_truth' / f'{n}.jpg', clean)
            for m in (1, 2):
                save(root / 'Rain1400' / split / 'rainy_image' / f'{n}_{m}.jpg', pair(n + 7 * m)[1] // 2 + clean // 2)
    return root


def cli(args, env=None):
    """The script as a program, in its own process group (a kill of the group spares pytest)."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    return subprocess.run([sys.executable, SCRIPT, *args], env=full_env, capture_output=True, text=True,
                          start_new_session=True, timeout=600)


def test_bad_input_is_one_line_naming_the_option_or_folder(tmp_path, reproduce, capsys):
    data = tmp_path / 'data'
    (data / 'Rain100L').mkdir(parents=True)
    cases = [
        (['--data', str(tmp_path / 'missing')], f'error: --data {tmp_path / "missing"}: folder not found'),
        (['--tables', '2', '6'], 'error: argument --tables: unknown table \'6\''),
        (['--tables', '2'], f'error: --data {data}: no folder Rain100H/ (table(s) 2 need Rain100H'),
        (['--override', 'netwrk_g:num_feat=8'], 'error: --override netwrk_g:num_feat: no options file has netwrk_g'),
        (['--override', 'network_g:attention=ca'], 'error: argument --override: network_g:attention is set by each'),
        (['--gpus', '3'], 'error: argument --gpus: the paper\'s batch of 32 does not split over 3 GPUs'),
        (['--scale', '2'], 'error: argument --scale: \'2\' is not a fraction in (0, 1]'),
    ]
    for argv, message in cases:
        try:
            status = reproduce.main(['--data', str(data), '--tables', '3', '--out', str(tmp_path / 'out')] + argv)
        except SystemExit as exc:  # argparse's errors
            status = exc.code
        err = capsys.readouterr().err.strip()
        assert status == 1 and len(err.splitlines()) == 1 and err.startswith(message), (argv, err)
    assert not (tmp_path / 'out').exists()


def test_dry_run_lists_every_experiment_and_writes_its_options(tmp_path, reproduce, capsys, monkeypatch):
    monkeypatch.setattr(reproduce, 'ESTIMATE_IMAGE', (H, W))  # time a small test image: seconds, not minutes
    for dataset in ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400'):
        (tmp_path / 'data' / dataset).mkdir(parents=True)
    out = tmp_path / 'out'
    argv = ['--data', str(tmp_path / 'data'), '--out', str(out), '--dry-run', '--gpus', '2', '--jobs', '2',
            '--scale', '0.002', '--estimate-iters', '1'] + SMALL
    assert reproduce.main(argv) == 0
    text = capsys.readouterr().out
    listed = re.findall(r'^\s*\d+\. (DSMNet_\S+)  tables ([\d, ]+)  (\w+)  ([\d,]+) iterations', text, re.M)
    assert len(listed) == EXPERIMENTS and len({name for name, *_ in listed}) == EXPERIMENTS
    assert ('DSMNet_Rain100L', '2, 3, 4, 5', 'Rain100L', '250') in listed  # 125,000 x 0.002, shared by four tables
    assert ('DSMNet_Rain1400', '2', 'Rain1400', '7,875') in listed
    assert len(re.findall(r'estimate: [\d.]+ s/iteration -> training .+, validation and test', text)) == EXPERIMENTS
    assert text.count('torch.distributed.run --standalone --nproc_per_node=2') == EXPERIMENTS
    assert re.search(r'Total: [\d,]+ iterations; estimated .+ of work left, .+ with 2 at a time on the CPU', text)
    assert text.count('prepare Rain') == 4 and not (out / 'datasets').exists() and not (out / 'experiments').exists()

    train = yaml.safe_load((out / 'options' / 'train_DSMNet_Rain100L_M1.yml').read_text())
    assert train['name'] == 'DSMNet_Rain100L_M1'
    assert train['network_g']['mab_variant'] == 'M1' and train['network_g']['num_feat'] == 16
    assert train['datasets']['train']['batch_size_per_gpu'] == 16  # 32 in total on 2 GPUs
    assert train['datasets']['train']['dataroot_lq'] == str(out / 'datasets' / 'Rain100L' / 'train' / 'input')
    assert (train['train']['total_iter'], train['train']['scheduler']['milestones']) == (250, [125, 188])
    assert (train['val']['val_freq'], train['logger']['save_checkpoint_freq'], train['logger']['print_freq']) == (
        10, 10, 1)
    test = yaml.safe_load((out / 'options' / 'test_DSMNet_Rain100L_CA+SP.yml').read_text())
    assert test['network_g']['attention'] == 'ca+sp' and test['network_g']['num_levels'] == 2
    assert test['path']['pretrain_network_g'] == str(out / 'experiments' / 'DSMNet_Rain100L_CA+SP' / 'models' /
                                                     'net_g_latest.pth')
    assert yaml.safe_load((out / 'options' / 'train_DSMNet_Rain100L_n16.yml').read_text())['network_g'][
        'num_subspaces'] == 16


def _tables(out):
    return json.loads((out / 'tables.json').read_text())


def test_all_four_tables_end_to_end_killed_resumed_and_skipped(tmp_path, reproduce, capsys, monkeypatch):
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
    assert reproduce.training_states(out, 'DSMNet_Rain100H') == [1, 2]
    assert not (out / 'runs' / 'DSMNet_Rain100H' / 'metrics.json').exists()
    monkeypatch.setattr(reproduce, 'ESTIMATE_IMAGE', (H, W))
    assert reproduce.main(argv + ['--dry-run', '--estimate-iters', '1']) == 0
    text = capsys.readouterr().out
    assert re.search(r'DSMNet_Rain100H  tables 2  Rain100H  4 iterations \(3 pairs\)  resumes from iteration 2', text)
    assert 'prepare ' not in text

    # 2. The same command again: it resumes; one training is killed (that process alone), is
    # reported, and all the others still run.
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.setenv('PYTHONPATH', str(hook))
    monkeypatch.setenv('REPRODUCE_TEST_KILL', 'DSMNet_Rain100L_M1:3:self')
    assert reproduce.main(argv) == 1
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
    assert reproduce.main(argv) == 0
    text = capsys.readouterr().out
    assert re.findall(r'^train (\S+)', text, re.M) == ['DSMNet_Rain100L_M1']
    assert 'from iteration 2' in text and text.count('skip ') == EXPERIMENTS - 1

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
    assert reproduce.main(argv) == 0
    text = capsys.readouterr().out
    assert text.count('skip ') == EXPERIMENTS and not re.search(r'^(train|test|prepare) ', text, re.M)
    assert {p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('*.json')} == before


def test_other_settings_in_the_same_out_are_refused_not_mixed(tmp_path, reproduce, capsys):
    exp = reproduce.build_experiments([5])[1]
    out = tmp_path / 'out'
    args = reproduce.parse_args(['--data', str(tmp_path), '--scale', '0.5'])
    exp.train_opt, _ = reproduce.make_options(exp, out, args, cuda=False)
    reproduce.write_json(out / 'runs' / exp.name / 'settings.json', reproduce.fingerprint(exp.train_opt, 1))
    assert reproduce.status(exp, out, 1) == ('new', '')
    exp.train_opt, _ = reproduce.make_options(exp, out, reproduce.parse_args(['--data', str(tmp_path)]), cuda=False)
    state, detail = reproduce.status(exp, out, 1)
    assert state == 'changed' and 'train:total_iter 62500 -> 125000' in detail


def test_tables_have_the_protocol_columns_and_the_verdict_weighs_them(tmp_path, reproduce):
    out = tmp_path / 'out'
    # the rainy input of one prepared test set, 48 x 40 pixels: every metric's value computed here
    test = out / 'datasets' / 'Rain100L' / 'test'
    clean, rainy = pair(5)
    save(test / 'target' / 'a.png', clean)
    save(test / 'input' / 'a.png', rainy)
    reproduce.write_json(out / 'runs' / 'rainy_Rain100L.json', {'psnr_y': 1., 'ssim_y': .1, 'psnr_rgb': 2.,
                                                                 'ssim_rgb': .2, 'images': 1})  # an older cache
    scores = reproduce.rainy_scores(out, 'Rain100L')
    assert scores['psnr_y_restormer'] == pytest.approx(calculate_psnr_y_rounded(rainy, clean))
    assert scores['ssim_y_restormer'] == pytest.approx(calculate_ssim_y_rounded(rainy, clean))
    assert scores['psnr_y_rcdnet'] == pytest.approx(calculate_psnr(rainy, clean, 0, test_y_channel=True))
    assert scores['psnr_y_rcdnet'] == pytest.approx(scores['psnr_y'])  # the rcdnet family's PSNR is BasicSR's
    assert scores['ssim_y_rcdnet'] == pytest.approx(calculate_ssim_y_downsampled(rainy, clean))
    assert scores['psnr_y'] != 1.  # the older cache was recomputed

    # the paper's Rainy row as if it had been measured by Restormer's script: that protocol matches
    paper_like = dict(psnr_y_restormer=26.91, ssim_y_restormer=0.838, psnr_y=27.03, psnr_y_rcdnet=27.03)
    reproduce.write_json(out / 'runs' / 'rainy_Rain100L.json', dict(scores, **paper_like))
    # one run tested with all eight metrics, one tested before the protocol columns existed
    done = {m: 30. + i if m.startswith('psnr') else 0.9 for i, m in enumerate(reproduce.METRICS)}
    reproduce.write_json(out / 'runs' / 'DSMNet_Rain100L' / 'metrics.json', dict(done, total_iter=4))
    old = {'psnr_y': 27., 'ssim_y': .8, 'psnr_rgb': 26., 'ssim_rgb': .7, 'total_iter': 4}
    reproduce.write_json(out / 'runs' / 'DSMNet_Rain100H' / 'metrics.json', old)
    report = reproduce.collect_tables(out, {}, {'scale': 1, 'gpus': 1, 'overrides': []})
    assert report['colour_space']['matches'] == 'y_restormer'
    assert 'matches our Restormer Y scores' in report['colour_space']['verdict']
    rows = {r['label']: r for r in report['tables']['2']['rows']}
    assert rows['Rain100L']['y_restormer'] == {'psnr': done['psnr_y_restormer'], 'ssim': 0.9}
    assert rows['Rain100L']['y_rcdnet_minus_paper']['psnr'] == pytest.approx(done['psnr_y_rcdnet'] - 38.27)
    assert rows['Rain100H']['y']['psnr'] == 27. and rows['Rain100H']['y_restormer'] is None
    md = reproduce.render_tables(report)
    header = ('| row | paper | ours Y | Y - paper | ours RGB | RGB - paper | ours Restormer Y | Restormer Y - paper | '
              'ours RCDNet Y | RCDNet Y - paper | experiment | status |')
    assert md.count(header) == 4
    line = next(x for x in md.splitlines() if x.startswith('| Rain100L | 38.27 / 0.982 |'))
    assert line.count('|') == 13 and f'| {done["psnr_y_restormer"]:.2f} / 0.9000 |' in line
    line = next(x for x in md.splitlines() if x.startswith('| Rain100H | 28.62 / 0.902 |'))
    assert line.startswith('| Rain100H | 28.62 / 0.902 | 27.00 / 0.8000 | -1.62 / -0.1020 | 26.00 / 0.7000 | '
                           '-2.62 / -0.2020 | - | - | - | - |')
