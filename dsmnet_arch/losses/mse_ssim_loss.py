"""The DSM-Net training loss: MSE plus a weighted SSIM term (paper eq. 13-16)."""
import cv2
import torch
from torch import nn as nn
from torch.nn import functional as F

from basicsr.utils.registry import LOSS_REGISTRY

SSIM_WINDOW = 11  # BasicSR's SSIM: 11 x 11 Gaussian window, sigma 1.5, valid positions only
SSIM_SIGMA = 1.5


def ssim(pred, target, window):
    """Per-image SSIM of (N, C, H, W) images in [0, 1]: BasicSR's ``calculate_ssim_pt`` in float32.

    The same formula as BasicSR's metric (values scaled to [0, 255], constants (0.01 * 255)^2 and
    (0.03 * 255)^2, per-channel SSIM maps over the valid positions, averaged over channels and
    positions), computed in float32 with the separable 1D ``window`` (the 2D window is its outer
    product) in one grouped convolution per axis. Variances and covariance do not change when an
    image is shifted by a constant, so they are computed on images minus their mean: this keeps
    float32's cancellation error in E[x^2] - E[x]^2 small on bright, flat images. Agrees with
    BasicSR's float64 metric to about 1e-7.
    """
    c = pred.shape[1]
    x, y = pred * 255., target * 255.
    shift_x = x.detach().mean((2, 3), keepdim=True)  # constants: they change no value or gradient
    shift_y = y.detach().mean((2, 3), keepdim=True)
    x, y = x - shift_x, y - shift_y
    moments = torch.cat([x, y, x * x, y * y, x * y], 1)
    k = window.numel()
    moments = F.conv2d(moments, window.view(1, 1, k, 1).expand(5 * c, 1, k, 1), groups=5 * c)
    moments = F.conv2d(moments, window.view(1, 1, 1, k).expand(5 * c, 1, 1, k), groups=5 * c)
    mu_x, mu_y, xx, yy, xy = moments.chunk(5, 1)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    mu_x, mu_y = mu_x + shift_x, mu_y + shift_y
    c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return ssim_map.mean([1, 2, 3])


@LOSS_REGISTRY.register()
class MSESSIMLoss(nn.Module):
    """L = loss_weight * (MSE(pred, target) + ssim_weight * (1 - SSIM(pred, target))), eq. 16.

    SSIM is BasicSR's own metric (:func:`basicsr.metrics.calculate_ssim_pt`: per-channel SSIM
    averaged over channels), averaged over the batch, so the SSIM the loss optimises is the SSIM
    BasicSR reports for RGB images in [0, 1]. It is computed by :func:`ssim` in float32 on the
    images' device (BasicSR's function runs in float64 and is some 50 times slower on a CPU),
    outside any autocast region. Images must be at least 11 x 11 pixels (the SSIM window).

    Args:
        loss_weight (float): Weight of the whole loss. Default: 1.0.
        ssim_weight (float): Weight lambda of the SSIM term (paper: 0.2). Default: 0.2.
    """

    def __init__(self, loss_weight=1.0, ssim_weight=0.2):
        super().__init__()
        self.loss_weight = loss_weight
        self.ssim_weight = ssim_weight
        window = torch.from_numpy(cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)).float().flatten()
        self.register_buffer('window', window, persistent=False)  # BasicSR's window, moves with .to()

    def forward(self, pred, target, **kwargs):
        """
        Args:
            pred (Tensor): (N, C, H, W) restored images, [0, 1] range.
            target (Tensor): (N, C, H, W) ground truth, [0, 1] range.
        """
        if pred.shape != target.shape:
            raise ValueError(f'MSESSIMLoss needs pred and target of the same shape, got {tuple(pred.shape)} '
                             f'and {tuple(target.shape)}')
        if min(pred.shape[-2:]) < SSIM_WINDOW:
            raise ValueError(f'MSESSIMLoss needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels '
                             f'(SSIM window), got {pred.shape[-2]} x {pred.shape[-1]}')
        with torch.autocast(pred.device.type, enabled=False):
            pred, target = pred.float(), target.float()
            mse = F.mse_loss(pred, target)  # eq. 13
            ssim_value = ssim(pred, target, self.window.to(pred.device)).mean()  # eq. 14-15
        return self.loss_weight * (mse + self.ssim_weight * (1 - ssim_value))  # eq. 16
