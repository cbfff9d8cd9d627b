"""Seeded rain-streak synthesis following the additive rain model ``I = B + R``.

The rain layer ``R`` is a sum of streak layers. In each layer, raindrops start at random pixels
(a Bernoulli field of the layer's ``density``); every drop is a Gaussian spot of the layer's
``width`` smeared by a linear motion-blur kernel of a given ``length`` and ``angle``, with ends
that fade out. A layer mixes a few such kernels (angle jitter, varied lengths and widths), so
streaks in one layer are alike but not identical. Everything is drawn from one
``numpy.random.Generator``: the same seed gives the same rain on every machine.

Two presets:

- ``'light'`` (in the spirit of Rain100L): one layer of thin streaks in one direction.
- ``'heavy'`` (in the spirit of Rain100H): three layers (near, middle, far) of different size,
  brightness and density, each with its own direction.

Example::

    from dsmnet_arch.data.rain_synthesis import synthesize_rain
    rainy, rain = synthesize_rain(clean, preset='heavy', seed=0)  # rainy == clean + rain

The rain is achromatic (the same in every channel) and added, never subtracted, so ``R >= 0``
and ``R`` is exactly zero away from the drawn streaks. The rainy image is clipped to the valid
range and the returned ``R`` is the rain actually added (``rainy - clean``), so ``I = B + R``
holds exactly, also where bright streaks saturate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ['StreakLayer', 'PRESETS', 'streak_kernel', 'rain_layer', 'synthesize_rain', 'streak_coverage']


@dataclass(frozen=True)
class StreakLayer:
    """Parameters of one streak layer; each ``(low, high)`` pair is a range drawn from uniformly.

    Args:
        density (tuple[float, float]): Fraction of pixels where a streak starts.
        length (tuple[float, float]): Streak length in pixels (the motion-blur length).
        width (tuple[float, float]): Gaussian sigma across the streak, in pixels.
        angle (tuple[float, float]): Direction of the layer in degrees from vertical; positive
            values lean the streak's top to the left (rain blown to the right as it falls).
            Each image is mirrored left-right as a whole with probability 1/2 (all its layers
            together), so both senses occur.
        intensity (tuple[float, float]): Peak brightness a streak adds, on a [0, 1] scale.
        angle_jitter (float): Each of the layer's kernels deviates from the layer's angle by at
            most this many degrees. Default: 3.
        num_kernels (int): Number of different streak kernels mixed in the layer. Default: 3.
    """
    density: tuple[float, float]
    length: tuple[float, float]
    width: tuple[float, float]
    angle: tuple[float, float]
    intensity: tuple[float, float]
    angle_jitter: float = 3.0
    num_kernels: int = 3


# Named presets: a tuple of layers each. Lengths and widths are in pixels, chosen for images of
# a few hundred pixels across like the Rain100L/H test images.
PRESETS = {
    'light': (StreakLayer(
        density=(0.002, 0.004), length=(12, 24), width=(0.5, 0.8), angle=(-20, 20), intensity=(0.2, 0.5)), ),
    'heavy': (
        StreakLayer(  # near: long, wide, bright, sparse
            density=(0.0008, 0.0014), length=(30, 55), width=(1.0, 1.5), angle=(10, 30), intensity=(0.35, 0.7)),
        StreakLayer(  # middle
            density=(0.0015, 0.0025), length=(18, 32), width=(0.7, 1.0), angle=(-10, 5), intensity=(0.25, 0.5)),
        StreakLayer(  # far: short, thin, dim, dense
            density=(0.003, 0.005), length=(6, 14), width=(0.5, 0.7), angle=(-35, -15), intensity=(0.15, 0.3)),
    ),
}


def streak_kernel(length, width, angle):
    """The image of one raindrop of peak brightness 1: a motion-blurred Gaussian spot.

    Along the streak the profile is ``1 - t**2`` (``t`` from -1 at one end to 1 at the other),
    across it a Gaussian; the kernel is exactly zero beyond ``length / 2`` along the streak and
    beyond ``3 * width`` across it, so the rain stays where streaks are drawn.

    Args:
        length (float): Streak length in pixels (> 0).
        width (float): Gaussian sigma across the streak in pixels (> 0).
        angle (float): Degrees from vertical; positive leans the top to the left.

    Returns:
        ndarray: float32 kernel of odd size, centred, maximum 1.
    """
    if length <= 0 or width <= 0:
        raise ValueError(f'streak_kernel: length and width must be positive, got {length} and {width}')
    half_along, half_across = length / 2, 3 * width
    radius = int(math.ceil(math.hypot(half_along, half_across)))
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float32)
    theta = math.radians(angle)
    # unit vector along the fall direction, image coordinates (x right, y down)
    along = x * math.sin(theta) + y * math.cos(theta)
    across = x * math.cos(theta) - y * math.sin(theta)
    profile = np.clip(1 - (along / half_along)**2, 0, None)
    spot = np.exp(-0.5 * (across / width)**2) * (np.abs(across) <= half_across)
    kernel = profile * spot
    return (kernel / kernel.max()).astype(np.float32)


def _draw(rng, low_high):
    low, high = low_high
    return float(rng.uniform(low, high))


def rain_layer(height, width, layers, rng):
    """Renders the rain of the given streak layers on a ``height x width`` canvas.

    Drops are also drawn in a margin around the canvas, so streaks cross the borders and the
    density does not drop near them. With probability 1/2 all directions are mirrored
    left-right (``angle -> -angle``), the same for every layer.

    Args:
        height (int): Canvas height in pixels.
        width (int): Canvas width in pixels.
        layers (Sequence[StreakLayer]): The layers to draw, summed.
        rng (numpy.random.Generator): Source of all randomness.

    Returns:
        ndarray: float32 ``height x width`` rain layer, >= 0 (can exceed 1 where streaks cross).
    """
    rain = np.zeros((height, width), np.float32)
    sense = rng.choice((-1, 1))  # mirror all directions of this image half of the time
    for layer in layers:
        density, base_angle = _draw(rng, layer.density), sense * _draw(rng, layer.angle)
        kernels = [
            streak_kernel(
                _draw(rng, layer.length), _draw(rng, layer.width),
                base_angle + rng.uniform(-layer.angle_jitter, layer.angle_jitter)) for _ in range(layer.num_kernels)
        ]
        margin = max(k.shape[0] for k in kernels) // 2
        shape = (height + 2 * margin, width + 2 * margin)
        # one Bernoulli field of drops, each with its own brightness and kernel
        drops = rng.random(shape) < density
        brightness = rng.uniform(*layer.intensity, size=shape).astype(np.float32) * drops
        which = rng.integers(0, len(kernels), size=shape)
        for index, kernel in enumerate(kernels):
            seeds = np.where(which == index, brightness, np.float32(0))
            # the kernel is point-symmetric, so correlation (filter2D) equals convolution
            streaks = cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_CONSTANT)
            rain += np.maximum(streaks[margin:margin + height, margin:margin + width], 0)
    # filter2D may use the FFT, which leaves round-off of about 1e-7 where there is no streak
    rain[rain < 1e-5] = 0
    return rain


def synthesize_rain(image, preset='light', seed=None):
    """Adds synthetic rain streaks to a clean image: ``I = B + R``.

    Args:
        image (ndarray): Clean image ``B``, ``H x W`` or ``H x W x C``; uint8 (0-255) or float
            with values in [0, 1].
        preset (str | Sequence[StreakLayer]): ``'light'``, ``'heavy'`` or your own layers.
            Default: 'light'.
        seed (int | numpy.random.Generator | None): Seed (or generator) for the rain; the same
            seed gives the same rain. None draws fresh randomness. Default: None.

    Returns:
        tuple[ndarray, ndarray]: ``(rainy, rain)``, both with the shape and dtype of ``image``:
        the rainy image ``I`` clipped to the valid range, and the rain layer ``R = I - B``
        (>= 0, zero away from streaks, the same in every channel).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f'synthesize_rain: expected an H x W or H x W x C image, got shape {image.shape}')
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"synthesize_rain: unknown preset '{preset}', choose one of {sorted(PRESETS)}")
        layers = PRESETS[preset]
    else:
        layers = tuple(preset)
    rng = np.random.default_rng(seed)

    rain = rain_layer(image.shape[0], image.shape[1], layers, rng)
    if image.ndim == 3:
        rain = rain[..., None]
    if image.dtype == np.uint8:
        rainy = np.clip(image + np.round(rain * 255), 0, 255).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if image.size and (image.min() < 0 or image.max() > 1):
            raise ValueError('synthesize_rain: float images must have values in [0, 1]')
        rainy = np.clip(image + rain, 0, 1).astype(image.dtype)
    else:
        raise ValueError(f'synthesize_rain: image dtype must be uint8 or float, got {image.dtype}')
    return rainy, rainy - image


def streak_coverage(rain, threshold=0.1):
    """Streak density of a rain layer: the fraction of pixels where ``R`` exceeds ``threshold``.

    Args:
        rain (ndarray): Rain layer as returned by :func:`synthesize_rain` (uint8 is read as
            value / 255).
        threshold (float): Brightness, on a [0, 1] scale, above which a pixel counts as rain.
            Default: 0.1.

    Returns:
        float: Fraction of covered pixels, in [0, 1].
    """
    rain = np.asarray(rain)
    rain = rain.astype(np.float32) / (255 if rain.dtype == np.uint8 else 1)
    if rain.ndim == 3:
        rain = rain.max(axis=2)
    return float((rain > threshold).mean())
