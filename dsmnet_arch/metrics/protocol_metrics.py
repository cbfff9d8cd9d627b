"""PSNR and SSIM as the deraining field's published tables compute them, for BasicSR's ``val: metrics:``.

Today's deraining tables come from two families of MATLAB evaluation scripts (docs/datasets.md,
"Scoring as the published tables"). Both score 8-bit image files on the Y channel of MATLAB's
``rgb2ycbcr`` (ITU-R BT.601, studio range 16-235), with no border crop:

``restormer`` (Restormer's and MPRNet's ``Deraining/evaluate_PSNR_SSIM.m``, DRSformer's copy of it for
Rain200L/H and SPA-Data): ``rgb2ycbcr`` of the **uint8** image, so Y is rounded to 8 bits; PSNR with
peak 255 on that Y; SSIM by Wang's ``SSIM_index`` (2003: 11 x 11 Gaussian window, sigma 1.5,
K = (0.01, 0.03), L = 255, the 'valid' region). Here: :func:`calculate_psnr_y_rounded` and
:func:`calculate_ssim_y_rounded`.

``rcdnet`` (RCDNet's ``statistic.m``, DRSformer's copy of it for DID-Data and DDN-Data = Rain1400):
Y of ``rgb2ycbcr(im2double(img))``, not rounded; PSNR with peak 1. That PSNR is BasicSR's own
``calculate_psnr`` with ``test_y_channel: true`` (the same Y, kept in floating point, and the same
MSE: peak 1 on Y/255 is peak 255 on Y), so it is reused, not written again. Its SSIM is
``ssim(x * 255, y * 255)`` with Wang's 2009 ``ssim.m``, which first downsamples an image whose shorter
side is 384 pixels or more: :func:`calculate_ssim_y_downsampled`.

The SSIM of both families is BasicSR's ``calculate_ssim`` (the same Gaussian window, constants and
'valid' region) applied to each family's Y; the Y of the first is BasicSR's ``bgr2ycbcr`` of the
8-bit image, which returns Y rounded to 8 bits. Over all 2^24 8-bit colours it gives the exact
BT.601 value rounded half up; the 194 colours whose exact Y lies half-way between two grey levels
are where MATLAB's double arithmetic may round the other way (not checked: no MATLAB here).

The functions take what BasicSR's validation gives its metrics: 8-bit BGR images (``tensor2img``),
``H x W x C`` (or ``C x H x W`` with ``input_order='CHW'``). ``crop_border`` is accepted as BasicSR's
metrics accept it; the protocols use 0.
"""
import numpy as np

from basicsr.metrics.metric_util import reorder_image, to_y_channel
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from basicsr.utils import bgr2ycbcr
from basicsr.utils.registry import METRIC_REGISTRY

#: The smallest side Wang's SSIM accepts: one 11 x 11 window ('valid' region of one pixel).
SSIM_WINDOW = 11

#: The ``val: metrics:`` entries of each protocol, keyed ``psnr`` and ``ssim``. The test options
#: files report them as ``psnr_y_<protocol>`` / ``ssim_y_<protocol>``; ``basicsr`` is BasicSR's own
#: Y metric, which the options files have always reported as ``psnr_y`` / ``ssim_y``.
PROTOCOLS = {
    'restormer': {
        'psnr': {'type': 'calculate_psnr_y_rounded', 'crop_border': 0},
        'ssim': {'type': 'calculate_ssim_y_rounded', 'crop_border': 0},
    },
    'rcdnet': {
        'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
        'ssim': {'type': 'calculate_ssim_y_downsampled', 'crop_border': 0},
    },
    'basicsr': {
        'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True},
        'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': True},
    },
}


def _hwc(img, input_order, crop_border):
    img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


def _check_pair(img, img2):
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape}, {img2.shape}.')


def _check_ssim_size(y):
    if min(y.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f'SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {y.shape[0]}x{y.shape[1]}')


def y_rounded(img):
    """Y of MATLAB's ``rgb2ycbcr`` of an 8-bit ``H x W x 3`` BGR image, 8-bit (``H x W x 1``).

    A one-channel image is its own Y, as the MATLAB script leaves gray images unconverted.
    """
    if img.dtype != np.uint8:
        raise TypeError(f'The protocol scores 8-bit images; got {img.dtype}')
    if img.shape[2] == 1:
        return img
    if img.shape[2] != 3:
        raise ValueError(f'Expected 1 or 3 channels, got {img.shape[2]}')
    return bgr2ycbcr(img, y_only=True)[..., None]


def wang_downsampling_factor(height, width):
    """``f = max(1, round(min(M, N) / 256))`` of Wang's ``ssim.m`` (2009), with MATLAB's rounding (half up)."""
    return max(1, int(np.floor(min(height, width) / 256 + 0.5)))


def wang_downsample(img):
    """The automatic downsampling of Wang's ``ssim.m`` (2009) of a 2-D image, in float64.

    ``ssim.m`` filters with an ``f x f`` box (``imfilter(img, ones(f) / f^2, 'symmetric', 'same')``,
    whose kernel centre is element ``floor((f + 1) / 2)``) and keeps every f-th pixel from the first
    (``img(1:f:end, 1:f:end)``). Each kept pixel is the mean of the ``f x f`` block that starts
    ``(f - 1) // 2`` pixels above and left of it, mirrored at the edges.
    """
    height, width = img.shape
    f = wang_downsampling_factor(height, width)
    img = img.astype(np.float64)
    if f == 1:
        return img
    before = (f - 1) // 2
    rows, cols = -(-height // f) * f, -(-width // f) * f  # ceil(M / f) kept pixels of f each
    padded = np.pad(img, ((before, f), (before, f)), mode='symmetric')[:rows, :cols]
    return padded.reshape(rows // f, f, cols // f, f).mean(axis=(1, 3))


@METRIC_REGISTRY.register()
def calculate_psnr_y_rounded(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """PSNR on the 8-bit Y of MATLAB's ``rgb2ycbcr``, peak 255 (the ``restormer`` protocol).

    Args:
        img, img2 (ndarray): 8-bit BGR images (or one-channel), as BasicSR's validation gives them.
        crop_border (int): pixels cropped from each edge first (0 in the protocol).
        input_order (str): 'HWC' or 'CHW'.

    Returns:
        float: PSNR in dB (``inf`` for equal Y).
    """
    _check_pair(img, img2)
    y, y2 = (y_rounded(_hwc(i, input_order, crop_border)) for i in (img, img2))
    return float(calculate_psnr(y, y2, crop_border=0))


@METRIC_REGISTRY.register()
def calculate_ssim_y_rounded(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """Wang's SSIM (11 x 11 Gaussian, sigma 1.5, 'valid') on the 8-bit Y of ``rgb2ycbcr`` (``restormer``).

    Args as :func:`calculate_psnr_y_rounded`. Images need at least 11 x 11 pixels.
    """
    _check_pair(img, img2)
    y, y2 = (y_rounded(_hwc(i, input_order, crop_border)) for i in (img, img2))
    _check_ssim_size(y)
    return float(calculate_ssim(y, y2, crop_border=0))


@METRIC_REGISTRY.register()
def calculate_ssim_y_downsampled(img, img2, crop_border=0, input_order='HWC', **kwargs):
    """Wang's 2009 ``ssim.m`` on the unrounded Y (0-255) of ``rgb2ycbcr`` (the ``rcdnet`` protocol).

    The Y of each image is downsampled by :func:`wang_downsample` (by 2 for DID-Data's 512 x 512
    images, not at all below 384 pixels), then scored with Wang's Gaussian SSIM, 'valid' region.
    Args as :func:`calculate_psnr_y_rounded`; 8-bit or float [0, 255] images.
    """
    _check_pair(img, img2)
    y, y2 = (wang_downsample(to_y_channel(_hwc(i, input_order, crop_border))[..., 0]) for i in (img, img2))
    _check_ssim_size(y)
    return float(calculate_ssim(y, y2, crop_border=0))
