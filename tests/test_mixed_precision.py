"""bf16 mixed precision (train: bf16: true) on the CPU: the steps train, and stay close to fp32."""
import copy

import numpy as np
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet, MSESSIMLoss, DerainModel)
from basicsr.models import build_model
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from test_mse_ssim_loss import rainy_pair

NETWORK = dict(type='DSMNet', num_feat=8, num_levels=2, num_subspaces=4)


def derain_model(bf16):
    opt = dict(
        name='bf16', model_type='DerainModel', scale=1, num_gpu=0, is_train=True, dist=False,
        network_g=dict(NETWORK), path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=5e-3, betas=[0.9, 0.999]),
                   scheduler=dict(type='MultiStepLR', milestones=[100], gamma=0.5),
                   pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2), bf16=bf16))
    torch.manual_seed(0)
    return build_model(opt)


def batch():
    rainy, clean = rainy_pair(size=32)
    return {'lq': torch.cat([rainy, rainy.flip(-1)]), 'gt': torch.cat([clean, clean.flip(-1)])}


def test_bf16_training_steps_lower_the_loss_and_follow_fp32():
    models = {bf16: derain_model(bf16) for bf16 in (False, True)}
    assert models[True].use_bf16 and not models[False].use_bf16
    models[True].net_g.load_state_dict(models[False].net_g.state_dict())  # same start
    data = batch()
    losses = {}
    for bf16, model in models.items():
        model.feed_data(copy.deepcopy(data))
        losses[bf16] = []
        for it in range(1, 9):
            model.optimize_parameters(it)
            losses[bf16].append(model.log_dict['l_pix'])
    assert all(np.isfinite(losses[True]))
    assert losses[True][-1] < 0.9 * losses[True][0], losses[True]
    # the fp32 trajectory within bf16's rounding: 8 Adam steps from the same weights on the same batch
    assert np.allclose(losses[True], losses[False], rtol=0.03), (losses[True], losses[False])
    assert all(p.dtype == torch.float32 for p in models[True].net_g.parameters())  # fp32 master weights


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
