"""Mixed precision (train: amp) on the CPU: bf16 steps train and stay close to fp32; fp16's options,
errors, gradient scaler, non-finite guard and training state (the fp16 runs themselves: tests/test_cuda.py; the
train: amp option and the precision rule: tests/test_precision.py)."""
import copy

import numpy as np
import pytest
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet, MSESSIMLoss, DerainModel)
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import batch, derain_model


def test_bf16_training_steps_lower_the_loss_and_follow_fp32():
    models = {amp: derain_model(amp=amp) for amp in (False, 'bf16')}
    assert models['bf16'].amp == 'bf16' and models[False].amp is None
    assert models['bf16'].scaler is None  # bf16 has fp32's exponent range: no loss scaling
    models['bf16'].net_g.load_state_dict(models[False].net_g.state_dict())  # same start
    data = batch()
    losses = {}
    for amp, model in models.items():
        model.feed_data(copy.deepcopy(data))
        losses[amp] = []
        for it in range(1, 9):
            model.optimize_parameters(it)
            losses[amp].append(model.log_dict['l_pix'])
    assert all(np.isfinite(losses['bf16']))
    assert losses['bf16'][-1] < 0.9 * losses['bf16'][0], losses['bf16']
    # the fp32 trajectory within bf16's rounding: 8 Adam steps from the same weights on the same batch
    assert np.allclose(losses['bf16'], losses[False], rtol=0.03), (losses['bf16'], losses[False])
    assert all(p.dtype == torch.float32 for p in models['bf16'].net_g.parameters())  # fp32 master weights


def test_bf16_forward_is_close_to_fp32():
    torch.manual_seed(0)
    net = DSMNet(num_feat=16, num_levels=3, num_subspaces=4).eval()  # deeper than the training test's
    x = batch()['lq']
    with torch.no_grad():
        reference = net(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = net(x)
    diff = (out.float() - reference).abs()
    # bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.002 per operation); measured here:
    # mean 4e-4, max 2e-3, against a rain layer R = x - out of mean magnitude 0.06
    assert diff.mean() < 2e-3 and diff.max() < 1e-2, (diff.mean().item(), diff.max().item())
    assert diff.mean() < 0.05 * (x - reference).abs().mean()


def test_fp16_on_the_cpu_is_refused_naming_the_option():
    with pytest.raises(ValueError, match=r'^train:amp: fp16 needs a CUDA GPU .* use amp: bf16 or false there$'):
        derain_model(amp='fp16')


def test_scaler_overflow_skips_the_step_without_stopping_and_its_state_resumes(tmp_path):
    """The fp16 code path on the CPU: a gradient scaler on an fp32 model (fp16 autocast needs a GPU).

    An overflow in the scaled gradients (here: injected into one gradient) is the scaler's business: the
    step is skipped and the scale halved, the non-finite-loss guard stays silent. The scale goes into
    the training state and comes back on resume; states without it still resume.
    """
    model = derain_model(training_states=str(tmp_path), nonfinite_loss='stop')
    model.scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    model.feed_data(batch())
    model.optimize_parameters(1)
    assert model.log_dict['grad_scale'] == 1024.0
    before = copy.deepcopy(model.net_g.state_dict())
    handle = model.net_g.conv_first.weight.register_hook(lambda grad: torch.full_like(grad, float('inf')))
    model.optimize_parameters(2)  # overflow: no exception, no step
    handle.remove()
    assert np.isfinite(model.log_dict['l_pix']) and model.log_dict['grad_scale'] == 512.0
    params = dict(model.net_g.named_parameters())
    assert all(torch.equal(params[k], before[k]) for k in params)
    model.optimize_parameters(3)
    assert not torch.equal(model.net_g.conv_first.weight, before['conv_first.weight'])
    model.save_training_state(epoch=0, current_iter=3)
    state = torch.load(tmp_path / '3.state', weights_only=True)
    assert state['scaler']['scale'] == 512.0

    resumed = derain_model()
    resumed.scaler = torch.amp.GradScaler('cpu')
    resumed.resume_training(state)
    assert resumed.scaler.get_scale() == 512.0
    saved_adam, resumed_adam = state['optimizers'][0]['state'], resumed.optimizer_g.state_dict()['state']
    assert all(torch.equal(saved_adam[i]['exp_avg'], resumed_adam[i]['exp_avg']) for i in saved_adam)
    assert all(s['step'].device.type == 'cpu' for s in resumed_adam.values())

    old = {k: v for k, v in state.items() if k != 'scaler'}  # a state from before the scaler, or without fp16
    fresh = derain_model()
    fresh.scaler = torch.amp.GradScaler('cpu')
    fresh.resume_training(old)
    assert fresh.scaler.get_scale() == 65536.0
    derain_model().resume_training(state)  # without fp16 the scaler's state is ignored
