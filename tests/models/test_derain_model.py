"""DerainModel (dsmnet_arch.models.derain_model) in the test process: paths the shipped options do not take (EMA
weights, the network's mode after a validation), its loading of weights (params_ema, the recorded network)
and its non-finite-loss policy (train: nonfinite_loss).

Its other options have files of their own beside this one (test_derain_model_amp.py, _compile.py,
_sync_bn.py, test_divergence_guard.py). The runs in subprocesses: EMA weights saved and resumed in
tests/end_to_end/test_resume.py, a non-finite loss on one process of a distributed run in
tests/end_to_end/test_distributed.py.
"""
import logging
import os
import sys

import pytest
import torch

import dsmnet_arch  # noqa: F401
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import arch_record
from dsmnet_arch.models.derain_model import DerainModel

import basicsr.train
from basicsr.models import build_model
from basicsr.models.base_model import BaseModel

from conftest import TINY, run_train, tiny, train_options, write_yaml


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


def same_weights(net, state):
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def model_without_network(**opt):
    """A DerainModel with BaseModel's state only (options, device), no network built: enough for its
    ``load_network``, which BasicSR's trainer calls for net_g and the EMA copy."""
    model = object.__new__(DerainModel)
    BaseModel.__init__(model, {'num_gpu': 0, 'is_train': False, 'dist': False, **opt})
    return model


def test_derain_models_load_network_prefers_params_ema_and_drops_the_prefix(tmp_path):
    ema, plain = tiny(1).state_dict(), tiny(2).state_dict()
    torch.save({'params': {f'module.{k}': v for k, v in plain.items()}, 'params_ema': ema}, tmp_path / 'both.pth')
    torch.save({'params': plain}, tmp_path / 'plain.pth')
    net = tiny(3)
    model_without_network().load_network(net, str(tmp_path / 'both.pth'), True, 'params_ema')
    assert same_weights(net, ema)
    model_without_network().load_network(net, str(tmp_path / 'both.pth'), True, 'params')
    assert same_weights(net, plain)
    model_without_network().load_network(net, str(tmp_path / 'plain.pth'), True, 'params_ema')  # falls back to params
    assert same_weights(net, plain)


def test_derain_models_load_network_names_the_file_that_does_not_fit(tmp_path):
    torch.save({'params': DSMNet(num_feat=16, num_levels=2, num_subspaces=4).state_dict()}, tmp_path / 'wide.pth')
    with pytest.raises(ValueError, match=f'Weights in {tmp_path / "wide.pth"} do not fit DSMNet: Error'):
        model_without_network().load_network(tiny(0), str(tmp_path / 'wide.pth'), True, 'params')
    with pytest.raises(FileNotFoundError, match='Checkpoint file not found: .*nothing.pth'):
        model_without_network().load_network(tiny(0), str(tmp_path / 'nothing.pth'), True, 'params')


def test_weights_recorded_as_another_variant_are_refused_by_derain_models_loader(tmp_path, monkeypatch):
    """Table 5's variants have the same weights: the record, not the shapes, tells them apart."""
    m3 = DSMNet(**TINY, mab_variant='M3')
    record = arch_record({'type': 'DSMNet', **TINY, 'mab_variant': 'M3'}, DSMNet)
    torch.save({'params': m3.state_dict(), 'arch': record}, tmp_path / 'm3.pth')
    model = model_without_network(network_g={'type': 'DSMNet', **TINY, 'mab_variant': 'M5'})
    net = tiny(1)
    with pytest.raises(ValueError) as err:
        model.load_network(net, str(tmp_path / 'm3.pth'), True, 'params')
    assert str(err.value) == (f"Weights in {tmp_path / 'm3.pth'} were saved from another DSMNet: mab_variant='M5' vs "
                              "'M3' (options vs checkpoint); make the options match, or load them anyway with strict "
                              'loading off (path: strict_load_g: false)')
    assert not same_weights(net, m3.state_dict())

    warnings = []
    monkeypatch.setattr(logging.getLogger('basicsr'), 'warning', warnings.append)
    model.load_network(net, str(tmp_path / 'm3.pth'), False, 'params')  # loaded, and said
    assert same_weights(net, m3.state_dict())
    assert len(warnings) == 1 and "were saved from another DSMNet: mab_variant='M5' vs 'M3'" in warnings[0]
    model.opt['network_g']['mab_variant'] = 'M3'  # the same network: loads without a word
    model.load_network(tiny(2), str(tmp_path / 'm3.pth'), True, 'params')
    assert len(warnings) == 1


@pytest.mark.usefixtures('fresh_basicsr_logger')
def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(monkeypatch, capsys, tmp_path, toy_data):
    from dsmnet_arch.models.derain_model import DerainModel

    real_step = DerainModel.optimize_parameters

    def poisoned(self, current_iter):
        if current_iter == 3:
            self.lq = self.lq * float('nan')
        real_step(self, current_iter)

    monkeypatch.setattr(DerainModel, 'optimize_parameters', poisoned)
    status, err = run_train(monkeypatch, capsys, tmp_path, train_options(toy_data, name='nan'))
    assert status == 1
    assert 'error: Non-finite loss at iteration 3: l_pix=nan' in err
    models = tmp_path / 'experiments' / 'nan' / 'models'
    assert sorted(os.listdir(models)) == ['net_g_2.pth']
    weights = torch.load(models / 'net_g_2.pth', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.usefixtures('fresh_basicsr_logger')
def test_nonfinite_loss_skip_drops_the_batch(monkeypatch, capsys, tmp_path, toy_data):
    from dsmnet_arch import train
    from dsmnet_arch.models.derain_model import DerainModel


    real_step = DerainModel.optimize_parameters
    snapshots = {}

    def poisoned(self, current_iter):
        if current_iter == 3:
            snapshots['before'] = {k: v.clone() for k, v in self.net_g.state_dict().items()}
            self.lq = self.lq * float('inf')
        real_step(self, current_iter)
        if current_iter == 3:
            snapshots['after'] = {k: v.clone() for k, v in self.net_g.state_dict().items()}

    monkeypatch.setattr(DerainModel, 'optimize_parameters', poisoned)
    opt = train_options(toy_data, name='skip', nonfinite_loss='skip')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', write_yaml(tmp_path / 'skip.yml', opt)])
    monkeypatch.setattr(basicsr.train, 'parse_options', basicsr.train.parse_options)
    train.main()
    changed = [k for k, v in snapshots['after'].items() if not torch.equal(snapshots['before'][k], v)]
    assert not changed
    log = open(next((tmp_path / 'experiments' / 'skip').glob('train_*.log'))).read()
    assert 'Non-finite loss at iteration 3' in log and 'batch skipped' in log
    assert (tmp_path / 'experiments' / 'skip' / 'models' / 'net_g_latest.pth').exists()
