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

import cv2
import numpy as np
import pytest
import yaml

from dsmnet_arch.archs.dsmnet_arch import MAB_VARIANTS
from dsmnet_arch.metrics.protocol_metrics import (
    calculate_psnr_y_rounded,
    calculate_ssim_y_downsampled,
    calculate_ssim_y_rounded,
)
from dsmnet_arch.reproduction import estimate, layout, plan
from dsmnet_arch.reproduction.cli import main, parse_args
from dsmnet_arch.reproduction.paper import ALL_TABLES, METRICS, TABLES
from dsmnet_arch.reproduction.report import collect_tables, rainy_scores, render_tables

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


def test_bad_input_is_one_line_naming_the_option_or_folder(tmp_path, capsys):
    data = tmp_path / 'data'
    (data / 'Rain100L').mkdir(parents=True)
    cases = [
        (['--data', str(tmp_path / 'missing')], f'error: --data {tmp_path / "missing"}: folder not found'),
        (['--tables', '2', '6'], 'error: argument --tables: unknown table \'6\''),
        (['--tables', '2'], f'error: --data {data}: no folder Rain100H/ (table(s) 2 need Rain100H'),
        (['--override', 'netwrk_g:num_feat=8'], 'error: --override netwrk_g:num_feat: no options file has netwrk_g'),
        (['--override', 'network_g:attention=ca'], 'error: argument --override: network_g:attention is set by each'),
        (['--override', 'network_g:level_up=false'], 'error: argument --override: network_g:level_up is set by each'),
        (['--time-estimate'], 'error: argument --time-estimate: only with --dry-run'),
        (['--gpus', '3'], 'error: argument --gpus: the paper\'s batch of 32 does not split over 3 GPUs'),
        (['--scale', '2'], 'error: argument --scale: \'2\' is not a fraction in (0, 1]'),
    ]
    for argv, message in cases:
        try:
            status = main(['--data', str(data), '--tables', '3', '--out', str(tmp_path / 'out')] + argv)
        except SystemExit as exc:  # argparse's errors
            status = exc.code
        err = capsys.readouterr().err.strip()
        assert status == 1 and len(err.splitlines()) == 1 and err.startswith(message), (argv, err)
    assert not (tmp_path / 'out').exists()


def dry_run_argv(tmp_path, *extra):
    for dataset in ('Rain100L', 'Rain100H', 'Rain800', 'Rain1400'):
        (tmp_path / 'data' / dataset).mkdir(parents=True, exist_ok=True)
    return ['--data', str(tmp_path / 'data'), '--out', str(tmp_path / 'out'), '--dry-run', '--scale', '0.002',
            *extra] + SMALL


def listed_experiments(text):
    """(name, tables, dataset, iterations) of every experiment a dry run lists."""
    return re.findall(r'^\s*\d+\. (DSMNet_\S+)  tables ([\dn, ]+)  (\w+)  ([\d,]+) iterations', text, re.M)


def test_dry_run_lists_every_experiment_and_writes_its_options(tmp_path, capsys, monkeypatch):
    def no_timing(*args):
        raise AssertionError('the dry run timed a network without --time-estimate')

    monkeypatch.setattr(estimate, 'time_network', no_timing)
    monkeypatch.setattr(estimate, 'time_metrics', no_timing)
    out = tmp_path / 'out'
    assert main(dry_run_argv(tmp_path, '--gpus', '2', '--jobs', '2')) == 0
    text = capsys.readouterr().out
    listed = listed_experiments(text)
    assert len(listed) == EXPERIMENTS and len({name for name, *_ in listed}) == EXPERIMENTS
    assert ('DSMNet_Rain100L', '2, 3, 4, 5', 'Rain100L', '250') in listed  # 125,000 x 0.002, shared by four tables
    assert ('DSMNet_Rain1400', '2', 'Rain1400', '7,875') in listed
    assert 'estimate:' not in text and 'Not timed: add --time-estimate to time each of the 12 networks' in text
    assert re.search(r'Total: [\d,]+ iterations\. Not timed', text)
    assert text.count('torch.distributed.run --standalone --nproc_per_node=2') == EXPERIMENTS
    assert '2 GPU(s) per training (processes on the CPU: BatchNorm over each one\'s 16 images)' in text
    assert text.count('prepare Rain') == 4 and not (out / 'datasets').exists() and not (out / 'experiments').exists()

    train = yaml.safe_load((out / 'options' / 'train_DSMNet_Rain100L_M1.yml').read_text())
    assert train['name'] == 'DSMNet_Rain100L_M1'
    assert train['network_g']['mab_variant'] == 'M1' and train['network_g']['num_feat'] == 16
    assert train['datasets']['train']['batch_size_per_gpu'] == 16  # 32 in total on 2 GPUs
    assert 'sync_bn' not in train['train']  # CPU processes cannot synchronise BatchNorm (with GPUs: below)
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


def test_dry_run_imports_no_network_code_without_time_estimate(tmp_path):
    """The plan alone reads options files: neither BasicSR nor this package's networks are imported."""
    program = textwrap.dedent(f'''
        import runpy, sys
        sys.argv = {[SCRIPT] + dry_run_argv(tmp_path, '--tables', '5')!r}
        try:
            runpy.run_path({SCRIPT!r}, run_name='__main__')
        except SystemExit as exit:
            assert not exit.code, exit.code
        network_code = ('basicsr', 'dsmnet_arch.archs', 'dsmnet_arch.models')
        print('imported:', sorted(m for m in network_code if m in sys.modules))
    ''')
    proc = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(listed_experiments(proc.stdout)) == 5 and proc.stdout.strip().endswith('imported: []')


def test_time_estimate_times_each_network_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(estimate, 'ESTIMATE_IMAGE', (H, W))  # time a small test image: seconds, not minutes
    timed, time_network = [], estimate.time_network

    def counted(train_opt, iters, device):
        timed.append((train_opt['network_g'], iters, train_opt['datasets']['train']['batch_size_per_gpu']))
        return time_network(train_opt, iters, device)

    monkeypatch.setattr(estimate, 'time_network', counted)
    assert main(dry_run_argv(tmp_path, '--gpus', '2', '--jobs', '2', '--time-estimate')) == 0
    text = capsys.readouterr().out
    assert len(re.findall(r'estimate: [\d.]+ s/iteration -> training .+, validation and test', text)) == EXPERIMENTS
    assert re.search(r'Total: [\d,]+ iterations; estimated .+ of work left, .+ with 2 at a time on the CPU', text)
    # the paper's network (once for all four data sets), 5 attention variants, 2 subspace counts, M1-M4
    assert len(timed) == 12 and all(iters == 1 and batch == 16 for _, iters, batch in timed)
    assert sorted((n['attention'], n['num_subspaces'], n['mab_variant']) for n, *_ in timed) == sorted(
        [('ca+sa', 8, 'M5'), ('ca', 8, 'M5'), ('sp', 8, 'M5'), ('sa', 8, 'M5'), ('ca+sp', 8, 'M5'),
         ('sp+sa', 8, 'M5'), ('ca+sa', 4, 'M5'), ('ca+sa', 16, 'M5')] + [('ca+sa', 8, f'M{i}') for i in range(1, 5)])


def test_table5_network_level_is_an_extra_table_of_four_more_runs(tmp_path, capsys):
    """--table5-network-level: Table 5's five rows read as the links between the MABs; M5 (all links, the full
    MAB) is the paper's model that the other tables share, the other four are runs of their own that differ
    from it in the level switches alone."""
    out = tmp_path / 'out'
    assert main(dry_run_argv(tmp_path, '--tables', '5')) == 0
    default = listed_experiments(capsys.readouterr().out)
    assert main(dry_run_argv(tmp_path, '--tables', '5', '--table5-network-level')) == 0
    text = capsys.readouterr().out
    listed = listed_experiments(text)
    more = [entry for entry in listed if entry[0] not in {name for name, *_ in default}]
    assert len(default) == 5 and len(listed) == 9 and [name for name, *_ in more] == [
        f'DSMNet_Rain100L_netM{i}' for i in (1, 2, 3, 4)]
    assert all(tables == '5n' and dataset == 'Rain100L' and iters == '250' for _, tables, dataset, iters in more)
    assert ('DSMNet_Rain100L', '5, 5n', 'Rain100L', '250') in listed  # M5 of both readings: the paper's model

    def options(name):
        return yaml.safe_load((out / 'options' / f'train_{name}.yml').read_text())

    paper = options('DSMNet_Rain100L')
    links = {'M1': (False, False, False), 'M2': (True, True, False), 'M3': (True, False, True),
             'M4': (False, True, True), 'M5': (True, True, True)}  # Across-Down, Across-Up, Dense-Fusion: Table 5
    assert tuple(paper['network_g'][k] for k in ('level_down', 'level_up', 'level_dense')) == links['M5']
    for m in ('M1', 'M2', 'M3', 'M4'):
        opt = options(f'DSMNet_Rain100L_net{m}')
        assert tuple(opt['network_g'][k] for k in ('level_down', 'level_up', 'level_dense')) == links[m]
        assert opt['network_g']['mab_variant'] == 'M5'
        differ = {k for k in paper['network_g'] if opt['network_g'][k] != paper['network_g'][k]}
        assert differ == {k for k, on in zip(('level_down', 'level_up', 'level_dense'), links[m]) if not on}
        assert opt['train'] == paper['train'] and opt['datasets']['train'] == paper['datasets']['train']
        assert {k: v for k, v in opt.items() if k not in ('name', 'network_g')} == {
            k: v for k, v in paper.items() if k not in ('name', 'network_g')}
    assert {m: tuple(v.values()) for m, v in MAB_VARIANTS.items()} == links  # the same pattern inside the MAB
    # the same figures as the paper's Table 5 under either reading
    assert [r.paper for r in ALL_TABLES['5n'][1]] == [r.paper for r in TABLES[5][1]]
    header = (out / 'options' / 'train_DSMNet_Rain100L_netM3.yml').read_text().splitlines()[0]
    assert header.endswith('for our network-level reading of table 5 row M3.')


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
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count('skip ') == EXPERIMENTS and not re.search(r'^(train|test|prepare) ', text, re.M)
    assert {p: p.stat().st_mtime_ns for p in (out / 'runs').rglob('*.json')} == before


def test_other_settings_in_the_same_out_are_refused_not_mixed(tmp_path, capsys):
    exp = plan.build_experiments([5])[1]
    out = tmp_path / 'out'
    args = parse_args(['--data', str(tmp_path), '--scale', '0.5'])
    exp.train_opt, _ = plan.make_options(exp, out, args, cuda=False)
    layout.write_json(out / 'runs' / exp.name / 'settings.json', layout.fingerprint(exp.train_opt, 1))
    assert layout.status(exp, out, 1) == ('new', '')
    exp.train_opt, _ = plan.make_options(exp, out, parse_args(['--data', str(tmp_path)]), cuda=False)
    state, detail = layout.status(exp, out, 1)
    assert state == 'changed' and 'train:total_iter 62500 -> 125000' in detail


def test_tables_have_the_protocol_columns_and_the_verdict_weighs_them(tmp_path):
    out = tmp_path / 'out'
    # the rainy input of one prepared test set, 48 x 40 pixels: every metric's value computed here
    test = out / 'datasets' / 'Rain100L' / 'test'
    clean, rainy = pair(5)
    save(test / 'target' / 'a.png', clean)
    save(test / 'input' / 'a.png', rainy)
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


def test_more_gpus_resume_the_same_experiment_when_batchnorm_sees_the_same_batch(tmp_path):
    """--gpus 2 on GPUs synchronises BatchNorm, so a run started on one GPU may go on on two; turning sync_bn off
    there changes what BatchNorm sees (16 images) and is refused."""
    exp = plan.build_experiments([5])[0]
    out = tmp_path / 'out'

    def fingerprint(*argv):
        args = parse_args(['--data', str(tmp_path), *argv])
        exp.train_opt, _ = plan.make_options(exp, out, args, cuda=True)
        return layout.fingerprint(exp.train_opt, args.gpus)

    layout.write_json(out / 'runs' / exp.name / 'settings.json', fingerprint())
    assert exp.train_opt['train'].get('sync_bn') is None
    fingerprint('--gpus', '2')
    assert exp.train_opt['train']['sync_bn'] is True and layout.status(exp, out, 2) == ('new', '')
    fingerprint('--gpus', '2', '--override', 'train:sync_bn=false')
    state, detail = layout.status(exp, out, 2)
    assert state == 'changed' and detail == 'batchnorm_batch unset -> 16'


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
