"""DerainModel paths the shipped options do not take: EMA weights, the network's mode after a
validation, and a non-finite loss on one process of a distributed run."""
import glob
import os

import pytest
import torch

import dsmnet_arch  # noqa: F401

from basicsr.models import build_model

from conftest import poisoned_training_script, run_entry, train_options, write_yaml


def in_process_model(toy_data, **train_overrides):
    opt = train_options(toy_data, **train_overrides)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path'].update(models='unused', training_states='unused')
    return build_model(opt)


@pytest.mark.parametrize('ema_decay', [0, 0.999])
def test_validation_runs_the_right_network_in_eval_mode_and_training_goes_on_in_train_mode(toy_data, ema_decay):
    torch.manual_seed(0)
    model = in_process_model(toy_data, ema_decay=ema_decay)
    net = model.get_bare_model(model.net_g)
    with torch.no_grad():
        for p in net.parameters():  # net_g moves on; the EMA copy stays behind
            p.add_(0.05 * torch.randn_like(p))
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)  # BatchNorm statistics of net_g move in train mode
    model.test()
    assert net.training, 'training would go on with frozen BatchNorm statistics'
    expected_net = model.net_g_ema if ema_decay else net
    net.eval()
    with torch.no_grad():
        expected, other = expected_net(model.lq), (net if ema_decay else None)
        torch.testing.assert_close(model.output, expected)
        if other is not None:
            assert (other(model.lq) - model.output).abs().max() > 1e-3  # it really was the EMA copy
    assert not hasattr(model, 'net_g_ema') or not model.net_g_ema.training


def test_ema_weights_are_saved_and_resumed(tmp_path, toy_data):
    opt = train_options(toy_data, name='ema', total_iter=4, ema_decay=0.5)
    yml = write_yaml(tmp_path / 'ema.yml', opt)
    train = [os.path.join(os.path.dirname(dsmnet_arch.__file__), 'train.py'), '-opt', yml]
    proc = run_entry(train + ['--force_yml', 'train:total_iter=2'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    models = tmp_path / 'experiments' / 'ema' / 'models'
    saved = torch.load(models / 'net_g_2.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema', 'arch'}
    assert any(not torch.equal(saved['params'][k], saved['params_ema'][k]) for k in saved['params'])

    proc = run_entry(train + ['--auto_resume'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(sorted(glob.glob(str(tmp_path / 'experiments' / 'ema' / 'train_ema_*.log')))[-1]).read()
    assert 'Resuming training from epoch' in log and 'iter: 2' in log
    assert f'Loading DSMNet model from {models / "net_g_2.pth"}, with param key: [params_ema]' in log
    final = torch.load(models / 'net_g_4.pth', weights_only=True)
    # EMA with decay 0.5 over iterations 3 and 4: ema4 = 0.25 ema2 + 0.25 net3 + 0.5 net4, so it
    # keeps a quarter of the resumed EMA; starting from params instead would give another result
    assert any(not torch.equal(final['params'][k], final['params_ema'][k]) for k in final['params'])


NAN_ON_RANK_1 = poisoned_training_script('''
    if int(os.environ['RANK']) == 1 and current_iter == 2:  # this process alone sees a NaN loss
        loss = self.cri_pix
        self.cri_pix = lambda output, gt: loss(output, gt) * float('nan')
        undo.append(lambda: setattr(self, 'cri_pix', loss))
''')


@pytest.mark.parametrize('policy', ['skip', 'stop'])
def test_a_nan_on_one_process_is_decided_by_all(tmp_path, toy_data, policy):
    """Both processes skip (or stop at) the batch one of them found non-finite; neither waits forever."""
    (tmp_path / 'nan_on_rank_1.py').write_text(NAN_ON_RANK_1)
    opt = train_options(toy_data, name='nan', total_iter=3, nonfinite_loss=policy)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    yml = write_yaml(tmp_path / 'nan.yml', opt)
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'nan_on_rank_1.py', '-opt',
                      yml, '--launcher', 'pytorch'], cwd=str(tmp_path), timeout=240)
    log = open(glob.glob(str(tmp_path / 'experiments' / 'nan' / 'train_nan_*.log'))[0]).read()
    if policy == 'skip':
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # rank 0's own loss was finite; it skipped because rank 1's was not
        assert 'Non-finite loss at iteration 2: l_pix=' in log and 'batch skipped' in log
        assert 'l_pix=nan' not in log
        weights = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1)]
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    else:
        assert proc.returncode != 0
        output = proc.stdout + proc.stderr
        assert output.count('Non-finite loss at iteration 2') >= 2  # raised in both processes
        assert not (tmp_path / 'experiments' / 'nan' / 'models' / 'net_g_latest.pth').exists()


def test_ema_weights_follow_the_trained_weights_by_the_decay_formula(toy_data):
    """After each step, ema = decay * ema + (1 - decay) * net for every parameter (BasicSR's formula)."""
    torch.manual_seed(0)
    decay = 0.9
    model = in_process_model(toy_data, ema_decay=decay)
    net = model.get_bare_model(model.net_g)
    ema = {k: v.detach().clone() for k, v in model.net_g_ema.named_parameters()}
    for it in (1, 2, 3):
        model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 16, 16)})
        model.optimize_parameters(it)
        trained = dict(net.named_parameters())
        for name, value in model.net_g_ema.named_parameters():
            expected = decay * ema[name] + (1 - decay) * trained[name].detach()
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)  # a missed update: ~1e-4
            ema[name] = expected
    moved = [k for k, v in model.net_g_ema.named_parameters() if not torch.equal(v, dict(net.named_parameters())[k])]
    assert moved  # the EMA copy is not simply the trained network
