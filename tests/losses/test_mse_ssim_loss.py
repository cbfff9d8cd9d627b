"""MSESSIMLoss: values against BasicSR's SSIM metrics and a hand-computed MSE, gradients, use in BasicSR."""
import cv2
import numpy as np
import pytest
import torch

import dsmnet_arch  # noqa: F401  (registers DSMNet and MSESSIMLoss)
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.losses.mse_ssim_loss import MSESSIMLoss, ssim

from basicsr.losses import build_loss
from basicsr.metrics.psnr_ssim import calculate_ssim, calculate_ssim_pt
from basicsr.models import build_model

from conftest import rainy_pair


def image_pair(seed=0, shape=(2, 3, 24, 20)):
    """A smooth image and a noisy, shifted copy of it, both in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g).cumsum(-1)
    clean = (clean / clean.amax((-2, -1), keepdim=True)) * 0.8 + 0.1
    noisy = (clean + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    return noisy, clean


def loss_ssim(pred, target):
    """The SSIM inside the loss: with loss_weight = ssim_weight = 1, L = MSE + 1 - SSIM."""
    loss = MSESSIMLoss(loss_weight=1.0, ssim_weight=1.0)(pred, target)
    mse = ((pred.double() - target.double())**2).sum() / pred.numel()
    return (1 - (loss.double() - mse)).item()


def test_value_is_weighted_mse_plus_ssim_term():
    pred, target = image_pair()
    mse = ((pred.double() - target.double())**2).sum().item() / pred.numel()  # by hand
    ssim = calculate_ssim_pt(pred, target, crop_border=0).mean().item()
    loss = build_loss(dict(type='MSESSIMLoss', loss_weight=2.0, ssim_weight=0.5))(pred, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2.0 * (mse + 0.5 * (1 - ssim)), abs=1e-6)
    default = MSESSIMLoss()(pred, target)
    assert default.item() == pytest.approx(mse + 0.2 * (1 - ssim), abs=1e-6)  # paper eq. 16


def test_ssim_is_basicsr_ssim_metric():
    pred, target = image_pair(seed=1)
    ssim = loss_ssim(pred, target)
    assert 0.3 < ssim < 0.99
    assert abs(ssim - calculate_ssim_pt(pred, target, crop_border=0).mean().item()) < 1e-5
    # and the numpy/OpenCV metric BasicSR reports in validation, image by image on [0, 255] HWC arrays
    per_image = [
        calculate_ssim(p.permute(1, 2, 0).double().numpy() * 255, t.permute(1, 2, 0).double().numpy() * 255, 0)
        for p, t in zip(pred, target)
    ]
    assert abs(ssim - float(np.mean(per_image))) < 1e-5


def hard_pairs():
    """Image pairs where float32 SSIM is hardest: bright and nearly flat (E[x^2] - E[x]^2 cancels)."""
    g = torch.Generator().manual_seed(5)
    shape = (4, 3, 32, 40)
    brightness = torch.tensor([0.05, 1.0, 0.5, 0.9]).view(4, 1, 1, 1)  # one per image
    return {
        'random': (torch.rand(shape, generator=g), torch.rand(shape, generator=g)),
        'bright flat': (0.98 + 0.01 * torch.rand(shape, generator=g), 0.97 + 0.01 * torch.rand(shape, generator=g)),
        'white, faint noise': (torch.full(shape, 0.99), 0.99 + 1e-3 * torch.rand(shape, generator=g)),
        'dark and bright images': (torch.rand(shape, generator=g) * brightness, torch.rand(shape, generator=g)),
        # means near 0, where the constant c1 = (0.01 * 255)^2 decides the luminance term
        'dark': (0.02 * torch.rand(shape, generator=g), 0.03 * torch.rand(shape, generator=g)),
    }


@pytest.mark.parametrize('name', list(hard_pairs()))
def test_float32_ssim_equals_basicsr_per_image(name):
    pred, target = hard_pairs()[name]
    window = torch.from_numpy(cv2.getGaussianKernel(11, 1.5)).float().flatten()
    ours = ssim(pred, target, window)
    assert ours.dtype == torch.float32 and ours.shape == (4,)
    assert (ours.double() - calculate_ssim_pt(pred, target, crop_border=0)).abs().max() < 1e-5


@pytest.mark.parametrize('channels', [1, 2, 8])
def test_ssim_of_any_number_of_channels_equals_basicsr(channels):
    pred, target = image_pair(seed=6, shape=(2, channels, 16, 18))
    ours = ssim(pred, target, MSESSIMLoss().window)
    assert ours.shape == (2, ) and (ours.double() - calculate_ssim_pt(pred, target, crop_border=0)).abs().max() < 1e-5


def test_images_of_the_window_size_are_enough():
    pred, target = image_pair(seed=7, shape=(1, 3, 11, 11))
    expected = calculate_ssim_pt(pred, target, crop_border=0).item()  # one window position
    assert loss_ssim(pred, target) == pytest.approx(expected, abs=1e-5)


def test_the_window_is_a_buffer_outside_the_state_dict():
    loss = MSESSIMLoss()
    assert loss.state_dict() == {} and [name for name, _ in loss.named_buffers()] == ['window']
    assert loss.to(torch.float64).window.dtype == torch.float64  # it moves with the module


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_a_loss_left_on_the_cpu_takes_images_on_the_gpu():
    pred, target = image_pair(seed=8)
    expected = MSESSIMLoss()(pred, target)
    assert MSESSIMLoss()(pred.cuda(), target.cuda()).item() == pytest.approx(expected.item(), abs=1e-6)


def test_loss_is_float32_under_autocast():
    pred, target = image_pair(seed=4)
    expected = MSESSIMLoss()(pred, target)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = MSESSIMLoss()(pred.bfloat16(), target)
    assert loss.dtype == torch.float32
    # only the rounding of pred to bfloat16 is left
    assert loss.item() == pytest.approx(MSESSIMLoss()(pred.bfloat16().float(), target).item(), abs=1e-6)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-2)


def test_identical_images_give_zero():
    pred, _ = image_pair(seed=2)
    assert MSESSIMLoss()(pred, pred.clone()).item() == 0
    constant = torch.full((1, 3, 16, 16), 0.3)
    assert MSESSIMLoss()(constant, constant.clone()).item() == 0


@pytest.mark.parametrize('pred_value, target', [
    (0.0, 'same'),  # constant images, identical
    (1.0, 'same'),
    (0.0, 'ones'),  # the two ends of the range
    (0.5, 'random'),  # constant prediction against texture
    (None, 'binary'),  # saturated prediction, values only 0 and 1
])
def test_gradients_are_finite(pred_value, target):
    g = torch.Generator().manual_seed(3)
    shape = (2, 3, 16, 16)
    if pred_value is None:
        pred = (torch.rand(shape, generator=g) > 0.5).float()
    else:
        pred = torch.full(shape, pred_value)
    targets = {'same': pred.clone(), 'ones': torch.ones(shape), 'random': torch.rand(shape, generator=g),
               'binary': 1 - pred}
    pred.requires_grad_(True)
    loss = MSESSIMLoss()(pred, targets[target])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    if target != 'same':
        assert pred.grad.abs().sum() > 0


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match=r'same shape, got \(1, 3, 16, 16\) and \(1, 3, 16, 17\)'):
        MSESSIMLoss()(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match=r'at least 11 x 11 pixels \(SSIM window\), got 10 x 16'):
        MSESSIMLoss()(torch.rand(1, 3, 10, 16), torch.rand(1, 3, 10, 16))


def test_adam_steps_on_one_image_lower_the_loss():
    torch.manual_seed(0)
    net = DSMNet(num_feat=8, num_levels=2, num_subspaces=4)
    criterion = MSESSIMLoss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rainy, clean = rainy_pair()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = criterion(net(rainy), clean)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_pixel_opt_of_basicsr_srmodel():
    torch.manual_seed(0)
    opt = dict(
        name='mse_ssim', model_type='SRModel', scale=1, num_gpu=0, is_train=True, dist=False,
        network_g=dict(type='DSMNet', num_feat=8, num_levels=2, num_subspaces=4),
        path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
        train=dict(optim_g=dict(type='Adam', lr=1e-3, betas=[0.9, 0.999]),
                   scheduler=dict(type='MultiStepLR', milestones=[4], gamma=0.5),
                   pixel_opt=dict(type='MSESSIMLoss', loss_weight=1.0, ssim_weight=0.2)))
    model = build_model(opt)
    assert isinstance(model.cri_pix, MSESSIMLoss) and model.cri_pix.ssim_weight == 0.2
    rainy, clean = rainy_pair()
    model.feed_data({'lq': rainy, 'gt': clean})
    logged = []
    for it in range(1, 7):
        model.optimize_parameters(it)
        logged.append(model.log_dict['l_pix'])
    assert all(np.isfinite(logged)) and logged[-1] < logged[0], logged
    # the logged value is the loss of the output the step was taken on
    expected = MSESSIMLoss()(model.output.detach(), clean).item()
    assert logged[-1] == pytest.approx(expected, rel=1e-5)
