"""scripts/reproduce_paper.py's command line (dsmnet_arch.reproduction.cli): bad arguments are one line, and the
dry run lists every experiment, writes its options and imports no network code.

The whole run (the four downloads in, the paper's tables out, killed, resumed and skipped):
tests/end_to_end/test_reproduce_paper.py.
"""
import os
import re
import subprocess
import sys
import textwrap

import yaml

from dsmnet_arch.reproduction import estimate
from dsmnet_arch.reproduction.cli import main

from conftest import REPRODUCE_EXPERIMENTS, REPRODUCE_SCRIPT, REPRODUCE_SMALL


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
            *extra] + REPRODUCE_SMALL


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
    assert len(listed) == REPRODUCE_EXPERIMENTS and len({name for name, *_ in listed}) == REPRODUCE_EXPERIMENTS
    assert ('DSMNet_Rain100L', '2, 3, 4, 5', 'Rain100L', '250') in listed  # 125,000 x 0.002, shared by four tables
    assert ('DSMNet_Rain1400', '2', 'Rain1400', '7,875') in listed
    assert 'estimate:' not in text and 'Not timed: add --time-estimate to time each of the 12 networks' in text
    assert re.search(r'Total: [\d,]+ iterations\. Not timed', text)
    assert text.count('torch.distributed.run --standalone --nproc_per_node=2') == REPRODUCE_EXPERIMENTS
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
        sys.argv = {[REPRODUCE_SCRIPT] + dry_run_argv(tmp_path, '--tables', '5')!r}
        try:
            runpy.run_path({REPRODUCE_SCRIPT!r}, run_name='__main__')
        except SystemExit as exit:
            assert not exit.code, exit.code
        network_code = ('basicsr', 'dsmnet_arch.archs', 'dsmnet_arch.models')
        print('imported:', sorted(m for m in network_code if m in sys.modules))
    ''')
    proc = subprocess.run([sys.executable, '-c', program], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(listed_experiments(proc.stdout)) == 5 and proc.stdout.strip().endswith('imported: []')
