"""DerainModel paths the shipped options do not take: EMA weights and the network's mode after a validation
(the runs in subprocesses: EMA weights saved and resumed in tests/end_to_end/test_resume.py, a non-finite
loss on one process of a distributed run in tests/end_to_end/test_distributed.py)."""
import pytest
import torch

import dsmnet_arch  # noqa: F401

from basicsr.models import build_model

from conftest import train_options


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
