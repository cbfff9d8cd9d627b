"""The DSM-Net training loss: MSE plus a weighted SSIM term (paper eq. 13-16)."""
from torch import nn as nn
from torch.nn import functional as F

from basicsr.metrics.psnr_ssim import calculate_ssim_pt
from basicsr.utils.registry import LOSS_REGISTRY

SSIM_WINDOW = 11  # BasicSR's SSIM: 11 x 11 Gaussian window, sigma 1.5, valid positions only


@LOSS_REGISTRY.register()
class MSESSIMLoss(nn.Module):
    """L = loss_weight * (MSE(pred, target) + ssim_weight * (1 - SSIM(pred, target))), eq. 16.

    SSIM is BasicSR's own metric (:func:`basicsr.metrics.calculate_ssim_pt`: per-channel SSIM
    averaged over channels, computed in float64), averaged over the batch, so the SSIM the loss
    optimises is the SSIM BasicSR reports for RGB images in [0, 1]. Images must be at least
    11 x 11 pixels (the SSIM window).

    Args:
        loss_weight (float): Weight of the whole loss. Default: 1.0.
        ssim_weight (float): Weight lambda of the SSIM term (paper: 0.2). Default: 0.2.
    """

    def __init__(self, loss_weight=1.0, ssim_weight=0.2):
        super().__init__()
        self.loss_weight = loss_weight
        self.ssim_weight = ssim_weight

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
        mse = F.mse_loss(pred, target)  # eq. 13
        ssim = calculate_ssim_pt(pred, target, crop_border=0).mean().to(mse.dtype)  # eq. 14-15
        return self.loss_weight * (mse + self.ssim_weight * (1 - ssim))  # eq. 16
