"""The protocol metrics (dsmnet_arch/metrics/protocol_metrics.py) against values computed by hand and by scikit-image.

The references: BT.601 Y by scikit-image's ``rgb2ycbcr`` (its own matrix), Wang's SSIM by
scikit-image's ``structural_similarity`` configured as Wang's MATLAB code (Gaussian window of sigma
1.5, which scikit-image truncates at 11 x 11 taps; population covariance; data range 255; it averages
the SSIM map without the 5-pixel border it cannot fill, which is MATLAB's 'valid' region), and
``ssim.m``'s downsampling by block means and SciPy's box filter.
"""
import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage.color import rgb2ycbcr as skimage_rgb2ycbcr
from skimage.metrics import structural_similarity

from dsmnet_arch.metrics.protocol_metrics import (
    PROTOCOLS,
    calculate_psnr_y_rounded,
    calculate_ssim_y_downsampled,
    calculate_ssim_y_rounded,
    wang_downsample,
    wang_downsampling_factor,
    y_rounded,
)

from basicsr.metrics import calculate_metric, calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY


def bgr(*rgb):
    """A 1 x N x 3 BGR uint8 image of the given RGB colours."""
    return np.array([[c[::-1] for c in rgb]], dtype=np.uint8)


def reference_y(img_bgr):
    """BT.601 Y (16-235, float64) of a BGR uint8 image by scikit-image."""
    return skimage_rgb2ycbcr(img_bgr[..., ::-1])[..., 0]


def wang_ssim(y, y2):
    """Wang's SSIM (2003 SSIM_index) on two 0-255 float images, by scikit-image."""
    return structural_similarity(y.astype(np.float64), y2.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255)


def smooth_pair(shape, seed, noise=8):
    """An 8-bit BGR image with structure at several scales, and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx[..., None] / rng.uniform(3, 9, 3)) * np.cos(yy[..., None] / rng.uniform(4, 12, 3))
    clean = np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).round().astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 255).round().astype(np.uint8)
    return noisy, clean


def test_registered_and_built_from_the_protocol_entries():
    for name in ('calculate_psnr_y_rounded', 'calculate_ssim_y_rounded', 'calculate_ssim_y_downsampled'):
        assert name in METRIC_REGISTRY
    img, img2 = smooth_pair((24, 32), 0)
    for protocol, metrics in PROTOCOLS.items():
        for opt in metrics.values():  # as BasicSR's validation calls them, with the options' extra keys
            value = calculate_metric({'img': img, 'img2': img2}, dict(opt, better='higher'))
            assert np.isfinite(value), (protocol, opt)


def test_y_of_white_and_black_is_235_and_16():
    white_black = bgr((255, 255, 255), (0, 0, 0))
    assert y_rounded(white_black[0][:, None])[..., 0].tolist() == [[235], [16]]  # H x W x C: 2 x 1 x 3
    assert y_rounded(white_black)[..., 0].tolist() == [[235, 16]]
    assert y_rounded(white_black).dtype == np.uint8


def test_rounded_y_is_the_bt601_y_rounded_for_random_colours():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    expected = np.floor(reference_y(img) + 0.5)  # MATLAB's uint8 cast rounds half away from zero
    assert np.array_equal(y_rounded(img)[..., 0], expected)


def test_psnr_of_hand_made_arrays():
    # a gray image is its own Y (the MATLAB script converts only 3-channel images)
    gray = np.array([[10, 20], [30, 40]], dtype=np.uint8)[..., None]
    off_by_two = gray.copy()
    off_by_two[0, 0] = 12  # squared errors 4, 0, 0, 0: MSE 1
    assert calculate_psnr_y_rounded(off_by_two, gray) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert calculate_psnr_y_rounded(gray, gray) == math.inf
    # white against black: Y 235 against 16
    white, black = bgr(*[(255, 255, 255)] * 2), bgr(*[(0, 0, 0)] * 2)
    assert calculate_psnr_y_rounded(white, black) == pytest.approx(20 * math.log10(255 / 219), abs=1e-12)
    # red 1 and 2 against black: Y 16 + 65.481/255 x {1, 2}, which rounds to 16 and 17
    for red, rounded_error in ((1, 0), (2, 1)):
        img = bgr(*[(red, 0, 0)] * 4)
        unrounded_error = 65.481 / 255 * red
        assert calculate_psnr(img, black[:, :1].repeat(4, 1), 0, test_y_channel=True) == pytest.approx(
            20 * math.log10(255 / unrounded_error), abs=1e-4)  # the rcdnet protocol's PSNR: peak 1 on Y / 255
        expected = 20 * math.log10(255 / rounded_error) if rounded_error else math.inf
        assert calculate_psnr_y_rounded(img, black[:, :1].repeat(4, 1)) == pytest.approx(expected, abs=1e-12)


def test_rcdnet_psnr_is_peak_1_on_unrounded_y():
    img, img2 = smooth_pair((30, 40), 2)
    mse = np.mean((reference_y(img) / 255 - reference_y(img2) / 255)**2)  # im2double, rgb2ycbcr, psnr.m: peak 1
    opt = PROTOCOLS['rcdnet']['psnr']
    assert calculate_metric({'img': img, 'img2': img2}, opt) == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)


def test_rounded_y_ssim_is_wangs_ssim_on_the_rounded_y():
    img, img2 = smooth_pair((48, 64), 3)
    y, y2 = (np.floor(reference_y(i) + 0.5) for i in (img, img2))
    expected = wang_ssim(y, y2)
    assert 0.3 < expected < 0.99
    assert calculate_ssim_y_rounded(img, img2) == pytest.approx(expected, abs=1e-9)
    chw = calculate_ssim_y_rounded(img.transpose(2, 0, 1), img2.transpose(2, 0, 1), input_order='CHW')
    assert chw == pytest.approx(expected, abs=1e-9)
    cropped = calculate_ssim_y_rounded(img, img2, crop_border=4)
    assert cropped == pytest.approx(wang_ssim(y[4:-4, 4:-4], y2[4:-4, 4:-4]), abs=1e-9)


@pytest.mark.parametrize('side, factor', [(100, 1), (383, 1), (384, 2), (512, 2), (639, 2), (640, 3), (767, 3),
                                          (768, 3), (896, 4)])
def test_downsampling_factor_rounds_as_matlab(side, factor):
    # round(min(M, N) / 256), half away from zero: 384 / 256 = 1.5 -> 2 and 640 / 256 = 2.5 -> 3 (Python's round: 2)
    assert wang_downsampling_factor(side, side + 50) == wang_downsampling_factor(side + 50, side) == factor


def test_downsampling_is_ssim_m_box_filter_and_subsampling():
    rng = np.random.default_rng(4)
    y = rng.uniform(0, 255, (513, 515))  # f = 2, odd sides: the last row and column are mirrored
    # imfilter(ones(2) / 4, 'symmetric', 'same') with its centre at element 1: the mean of pixel and next
    expected = uniform_filter(y, 2, origin=-1, mode='reflect')[::2, ::2]
    assert np.allclose(wang_downsample(y), expected, atol=1e-10)
    y = rng.uniform(0, 255, (640, 700))  # f = 3: centred box, mirrored at the first row and column
    assert np.allclose(wang_downsample(y), uniform_filter(y, 3, mode='reflect')[::3, ::3], atol=1e-10)
    y = rng.uniform(0, 255, (200, 300))
    assert np.array_equal(wang_downsample(y), y)


def test_downsampled_ssim_is_wangs_2009_ssim_on_the_unrounded_y():
    img, img2 = smooth_pair((512, 512), 5)  # DID-Data's size: downsampled by 2
    y, y2 = (reference_y(i).reshape(256, 2, 256, 2).mean(axis=(1, 3)) for i in (img, img2))
    expected = wang_ssim(y, y2)
    got = calculate_ssim_y_downsampled(img, img2)
    assert got == pytest.approx(expected, abs=2e-6)  # BasicSR's Y is float32
    not_downsampled = wang_ssim(reference_y(img), reference_y(img2))
    assert abs(got - not_downsampled) > 0.01  # the downsampling matters at this size
    small, small2 = smooth_pair((100, 120), 6)  # under 384 pixels: no downsampling
    assert calculate_ssim_y_downsampled(small, small2) == pytest.approx(
        wang_ssim(reference_y(small), reference_y(small2)), abs=2e-6)


def test_rounded_y_psnr_is_lower_by_what_the_rounding_predicts_on_a_high_psnr_pair():
    rng = np.random.default_rng(2)
    target = rng.integers(2, 254, (512, 512, 3), dtype=np.uint8)
    # each channel off by -2..2: the result's Y falls anywhere between grey levels, independently of the target's
    diff = rng.integers(-2, 3, target.shape)
    result = (target.astype(int) + diff).astype(np.uint8)
    basicsr_y = calculate_psnr(result, target, 0, test_y_channel=True)
    assert 49.9 < basicsr_y < 50.0
    rounded = calculate_psnr_y_rounded(result, target)
    # Rounding each Y to a grey level adds an error uniform on [-1/2, 1/2], variance 1/12; two of them: 1/6
    mse = 255**2 / 10**(basicsr_y / 10)
    assert rounded == pytest.approx(10 * math.log10(255**2 / (mse + 1 / 6)), abs=0.03)  # 48.97
    # More exactly: a Y difference d = n + p (0 <= p < 1) between a target Y uniform between grey levels and
    # the result's becomes n or n + 1 (chance p): the squared error d^2 gains p (1 - p) on average.
    d = (65.481 * diff[..., 2] + 128.553 * diff[..., 1] + 24.966 * diff[..., 0]) / 255
    p = d - np.floor(d)
    assert rounded == pytest.approx(10 * math.log10(255**2 / np.mean(d**2 + p * (1 - p))), abs=0.01)
    assert 48.9 < rounded < 49.0 and basicsr_y - rounded > 0.9


def test_refuses_what_the_protocol_does_not_score():
    img, img2 = smooth_pair((20, 20), 8)
    with pytest.raises(ValueError, match='shapes are different'):
        calculate_psnr_y_rounded(img, img2[:, :19])
    with pytest.raises(TypeError, match='8-bit'):
        calculate_psnr_y_rounded(img.astype(np.uint16) * 257, img2.astype(np.uint16) * 257)
    for metric in (calculate_ssim_y_rounded, calculate_ssim_y_downsampled):
        with pytest.raises(ValueError, match='at least 11x11 pixels, got 10x20'):
            metric(img[:10], img2[:10])
