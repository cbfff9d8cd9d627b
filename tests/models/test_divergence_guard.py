"""DerainModel's divergence guard (train: guard) and gradient clipping (train: grad_clip_norm): a loss
spike or a non-finite loss or gradient rolls the whole training state back to a snapshot, in one
process and in two gloo processes alike (tests/end_to_end/test_distributed.py); too many rollbacks stop the run."""
import copy
import logging

import pytest
import torch

import dsmnet_arch  # noqa: F401
from dsmnet_arch.models.divergence_guard import GUARD_DEFAULTS, guard_options

from basicsr.models import build_model

from conftest import train_options


@pytest.fixture
def basicsr_log():
    """The messages BasicSR's logger receives during the test (its own handlers may write elsewhere)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger('basicsr')
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def guarded_model(toy_data, guard, **train_overrides):
    """An in-process DerainModel (small DSMNet, Adam, EMA) with ``train: guard``."""
    opt = train_options(toy_data, guard=guard, ema_decay=0.9, **train_overrides)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0)
    opt['path'].update(models='unused', training_states='unused')
    torch.manual_seed(0)
    return build_model(opt)


def batch(scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(2, 3, 16, 16, generator=gen)
    return {'lq': lq, 'gt': (lq * 0.8) * scale}


def training_state(model):
    """Everything a rollback restores, copied."""
    return copy.deepcopy(dict(net=model.net_g.state_dict(), ema=model.net_g_ema.state_dict(),
                              optimizer=model.optimizer_g.state_dict(), scheduler=model.schedulers[0].state_dict()))


def assert_same_state(a, b):
    for key in ('net', 'ema'):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for index, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, b['optimizer']['state'][index][name]), (index, name)
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    assert a['scheduler'] == b['scheduler']


def steps(model, first, last, data=None):
    states = {}
    for it in range(first, last + 1):  # in the order of BasicSR's training loop
        model.update_learning_rate(it)
        model.feed_data(batch(seed=it) if data is None else data)
        model.optimize_parameters(it)
        states[it] = training_state(model)
    return states


@pytest.mark.parametrize('poison', ['loss spike', 'nan gradient', 'nan loss'])
def test_a_bad_iteration_restores_the_older_snapshot(toy_data, poison, basicsr_log):
    model = guarded_model(toy_data, dict(snapshot_every=4, window=20), total_iter=100)
    states = steps(model, 1, 10)  # snapshots after iterations 1 (the first), 4 and 8: the guard keeps 4 and 8
    assert [s['iter'] for s in model.guard.snapshots] == [4, 8]
    weight = model.net_g.conv_first.weight
    if poison == 'loss spike':  # finite, 2500 x the typical loss
        model.feed_data(batch(scale=60.0, seed=11))
    elif poison == 'nan gradient':  # the loss stays finite; one parameter's gradient is NaN
        handle = weight.register_hook(lambda grad: grad * float('nan'))
        model.feed_data(batch(seed=11))
    else:
        model.feed_data({'lq': batch(seed=11)['lq'] * float('nan'), 'gt': batch(seed=11)['gt']})
    model.optimize_parameters(11)
    if poison == 'nan gradient':
        handle.remove()
    expected = {'loss spike': 'loss ', 'nan gradient': 'non-finite gradient norm', 'nan loss': 'non-finite loss'}
    log = '\n'.join(basicsr_log)
    assert f'Divergence guard at iteration 11: {expected[poison]}' in log
    assert 'rolled back to the state of iteration 4 (rollback 1)' in log
    assert_same_state(training_state(model), states[4])
    assert weight.grad is None
    assert [s['iter'] for s in model.guard.snapshots] == [4]  # the newer snapshot is dropped
    assert all(torch.isfinite(v).all() for v in model.net_g.state_dict().values())
    # training goes on from there
    steps(model, 12, 13)
    assert model.log_dict['l_pix'] < 1 and model.guard.rollbacks == [11]


def test_a_spike_is_measured_against_the_median_of_the_recent_losses(toy_data):
    model = guarded_model(toy_data, dict(loss_ratio=3, window=10))
    steps(model, 1, 12)
    median = sorted(model.guard.losses)[len(model.guard.losses) // 2 - 1:len(model.guard.losses) // 2 + 1]
    assert model.guard.loss_trip(2.9 * min(median)) is None
    assert model.guard.loss_trip(3.1 * max(median)).startswith('loss ')
    assert model.guard.grad_trip(1e6) is None  # grad_ratio is off by default
    assert model.guard.grad_trip(float('inf')) == 'non-finite gradient norm (inf)'


def test_too_many_rollbacks_stop_the_run(toy_data):
    model = guarded_model(toy_data, dict(max_rollbacks=2, rollback_window=5, snapshot_every=2))
    steps(model, 1, 12)  # the medians need 10 losses
    spike = batch(scale=60.0)
    for it in (13, 14):
        model.feed_data(spike)
        model.optimize_parameters(it)
    model.feed_data(spike)
    with pytest.raises(FloatingPointError, match=r'rolled back 2 time\(s\) within 5 iterations \(at iterations 13, '
                       r'14, 15\): training stopped'):
        model.optimize_parameters(15)
    # outside the window the count starts over
    model.guard.rollbacks = [9, 10]
    model.optimize_parameters(16)
    assert model.guard.rollbacks == [9, 10, 16]


def test_rollbacks_lower_the_learning_rate_by_lr_factor(toy_data):
    model = guarded_model(toy_data, dict(lr_factor=0.5, snapshot_every=2), total_iter=100)
    steps(model, 1, 12)
    spike = batch(scale=60.0)
    for it, expected in ((13, 5e-4), (14, 2.5e-4)):
        model.feed_data(spike)
        model.optimize_parameters(it)
        assert model.get_current_learning_rate() == pytest.approx([expected])
        assert model.optimizer_g.param_groups[0]['initial_lr'] == pytest.approx(expected)
        assert model.schedulers[0].base_lrs == pytest.approx([expected])
    steps(model, 15, 18)  # a snapshot taken after a rollback keeps the lowered rate
    assert model.guard.snapshots[-1]['iter'] == 18
    model.feed_data(spike)
    model.optimize_parameters(19)
    assert model.get_current_learning_rate() == pytest.approx([1.25e-4])


def test_gradient_clipping_bounds_the_step_and_logs_the_norm_before_it(toy_data):
    clipped = guarded_model(toy_data, False, grad_clip_norm=1e-3)
    free = guarded_model(toy_data, False)
    for model in (clipped, free):
        model.feed_data(batch())
        model.optimize_parameters(1)
    assert clipped.log_dict['grad_norm'] == pytest.approx(free.log_dict['grad_norm'])
    assert clipped.log_dict['grad_norm'] > 1e-2
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clipped.net_g.parameters()]))
    assert norm == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.parametrize('train_opt,message', [
    (dict(guard=dict(loss_ratio=1)), 'train:guard:loss_ratio must be a number above 1'),
    (dict(guard=dict(window=0)), 'train:guard:window must be a positive integer'),
    (dict(guard=dict(lr_factor=2)), r'train:guard:lr_factor must be in \(0, 1\]'),
    (dict(guard=dict(max_rollback=2)), 'train:guard: unknown key'),
    (dict(guard='on'), 'train:guard must be true, false or a mapping'),
    (dict(guard=True, nonfinite_loss='skip'), 'train:nonfinite_loss has no effect with train:guard'),
    (dict(grad_clip_norm=0), 'train:grad_clip_norm must be a positive number or null'),
])
def test_bad_guard_options_are_named(toy_data, train_opt, message):
    with pytest.raises(ValueError, match=message):
        guarded_model(toy_data, train_opt.pop('guard', None), **train_opt)


def test_guard_options_defaults():
    assert guard_options(None) is None and guard_options(False) is None
    assert guard_options(True) == GUARD_DEFAULTS
    assert guard_options(dict(lr_factor=0.5)) == {**GUARD_DEFAULTS, 'lr_factor': 0.5}
