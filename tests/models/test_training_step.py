"""dsmnet_arch.models.training_step: a bare network's step is DerainModel's step, and fp16 never runs
without a gradient scaler."""
import copy

import pytest
import torch

from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.losses.mse_ssim_loss import MSESSIMLoss
from dsmnet_arch.models.training_step import TrainingStep

from conftest import NETWORK, batch, derain_model


@pytest.mark.parametrize('amp', [False, 'bf16'])
def test_a_bare_networks_step_is_derain_models_step(amp):
    """What a benchmark times (network, loss, Adam, clipping, no BasicSR model) updates the weights exactly
    as DerainModel.optimize_parameters does."""
    model = derain_model(amp=amp, grad_clip_norm=0.05)
    net = copy.deepcopy(model.net_g)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-3, betas=(0.9, 0.999))
    step = TrainingStep(net, MSESSIMLoss(loss_weight=1.0, ssim_weight=0.2), optimizer, 'cpu', amp or 'fp32',
                        grad_clip_norm=0.05)
    data = batch()
    model.feed_data(copy.deepcopy(data))
    for it in (1, 2):
        model.optimize_parameters(it)
        result = step(data['lq'], data['gt'])
        assert result.loss == model.log_dict['l_pix'] and result.grad_norm == model.log_dict['grad_norm']
        assert result.grad_norm > 0.05  # clipped: the norm before clipping is reported
    ours, theirs = net.state_dict(), model.net_g.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)  # weights and BatchNorm statistics


def test_fp16_gets_a_gradient_scaler_and_is_refused_without_one():
    net = DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'})
    optimizer = torch.optim.Adam(net.parameters())
    assert isinstance(TrainingStep(net, MSESSIMLoss(), optimizer, 'cpu', 'fp16').scaler, torch.amp.GradScaler)
    assert TrainingStep(net, MSESSIMLoss(), optimizer, 'cpu', 'bf16').scaler is None
    assert TrainingStep(net, MSESSIMLoss(), optimizer, 'cpu').scaler is None
    with pytest.raises(ValueError, match='fp16 needs a gradient scaler'):
        TrainingStep(net, MSESSIMLoss(), optimizer, 'cpu', 'fp16', scaler=None)


def test_a_non_finite_loss_stops_the_whole_step_before_anything_changes():
    torch.manual_seed(0)
    net = DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'})
    before = copy.deepcopy(net.state_dict())
    step = TrainingStep(net, lambda out, gt: {'l_pix': (out - gt).abs().mean() * float('nan')},
                        torch.optim.Adam(net.parameters()), 'cpu')
    data = batch()
    with pytest.raises(FloatingPointError, match='^Non-finite loss: l_pix=nan$'):
        step(data['lq'], data['gt'])
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if 'running' not in k and 'num_batches' not in k)
    assert all(p.grad is None for p in net.parameters())  # no backward ran
