"""Tests of the rain synthesizer (dsmnet_arch/data/rain_synthesis.py) and scripts/synthesize_rain.py."""
import math
import os
import sys

import cv2
import numpy as np
import pytest

from dsmnet_arch.data.rain_synthesis import PRESETS, StreakLayer, streak_coverage, streak_kernel, synthesize_rain

from conftest import REPO, load_script, run_entry


def textured(height=96, width=128, seed=0):
    """A clean uint8 image with texture and values well inside [0, 255] except a dark/bright band."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(40, 200, (height, width, 3)).astype(np.float32), (0, 0), 2)
    img[:, :8] = 250  # bright band: streaks there saturate
    return np.round(img).astype(np.uint8)


def orientation_degrees(mask):
    """Direction of a blob's major axis in degrees from vertical (positive: top leans left), from moments."""
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    vx, vy = vectors[:, np.argmax(values)]
    if vy < 0:
        vx, vy = -vx, -vy
    return math.degrees(math.atan2(vx, vy))


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_deterministic_for_a_seed(preset):
    img = textured()
    rainy_a, rain_a = synthesize_rain(img, preset, seed=7)
    rainy_b, rain_b = synthesize_rain(img, preset, seed=7)
    rainy_c, _ = synthesize_rain(img, preset, seed=8)
    np.testing.assert_array_equal(rainy_a, rainy_b)
    np.testing.assert_array_equal(rain_a, rain_b)
    assert not np.array_equal(rainy_a, rainy_c)
    # a Generator gives the same result as the seed it was made from
    rainy_g, _ = synthesize_rain(img, preset, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(rainy_a, rainy_g)


@pytest.mark.parametrize('preset', sorted(PRESETS))
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_additive_model_and_range(preset, dtype):
    img = textured()
    if dtype == np.float32:
        img = img.astype(np.float32) / 255
    rainy, rain = synthesize_rain(img, preset, seed=1)
    assert rainy.shape == img.shape and rain.shape == img.shape
    assert rainy.dtype == img.dtype and rain.dtype == img.dtype
    top = 255 if dtype == np.uint8 else 1
    wide_rainy, wide_img, wide_rain = (a.astype(np.float64) for a in (rainy, img, rain))
    assert wide_rainy.min() >= 0 and wide_rainy.max() <= top
    np.testing.assert_allclose(wide_rainy, wide_img + wide_rain, atol=1e-6)  # I = B + R
    assert wide_rain.min() >= 0  # rain only brightens
    assert (wide_rainy >= wide_img).all()
    # achromatic: the same rain in every channel except where a channel saturates
    unsaturated = (rainy < top).all(axis=2)
    for channel in (1, 2):
        np.testing.assert_allclose(wide_rain[..., 0][unsaturated], wide_rain[..., channel][unsaturated], atol=1e-6)
    assert (rainy[:, :8] == top).any()  # bright band clips instead of overflowing


def test_rain_only_where_streaks_are_drawn():
    """Few isolated streaks of one known kernel: every rain blob has the kernel's size and direction."""
    length, width, angle = 25.0, 0.8, 30.0
    layer = StreakLayer(
        density=(4e-4, 4e-4),
        length=(length, length),
        width=(width, width),
        angle=(angle, angle),
        intensity=(0.5, 0.5),
        angle_jitter=0.0,
        num_kernels=1)
    clean = np.full((160, 160), 0.2, np.float32)
    _, rain = synthesize_rain(clean, [layer], seed=3)
    kernel = streak_kernel(length, width, angle)
    support = int((kernel > 0).sum())
    count, labels = cv2.connectedComponents((rain > 0).astype(np.uint8), connectivity=8)
    assert count - 1 >= 3  # a few streaks were drawn
    assert (rain > 0).mean() < 0.1  # most of the image stays untouched (R exactly 0)
    signs = set()
    checked = 0
    for label in range(1, count):
        blob = labels == label
        ys, xs = np.nonzero(blob)
        touches_border = ys.min() == 0 or xs.min() == 0 or ys.max() == 159 or xs.max() == 159
        if touches_border or blob.sum() != support:
            continue  # cut by the border or two streaks crossing
        direction = orientation_degrees(blob)
        assert abs(abs(direction) - angle) < 2  # images are mirrored left-right half of the time
        signs.add(np.sign(direction))
        assert math.hypot(np.ptp(ys), np.ptp(xs)) <= length + 6 * width
        assert rain[blob].max() == pytest.approx(0.5, abs=1e-3)  # peak = drop brightness
        checked += 1
    assert checked >= 2
    assert len(signs) == 1  # one direction for the whole image


def test_kernel_shape_and_direction():
    for angle in (-25.0, 0.0, 15.0):
        kernel = streak_kernel(31, 1.0, angle)
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert kernel.max() == pytest.approx(1.0)
        np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-6)  # point-symmetric
        assert abs(orientation_degrees(kernel > 0.2) - angle) < 2
    with pytest.raises(ValueError, match='length and width must be positive'):
        streak_kernel(0, 1, 0)


@pytest.mark.parametrize('preset, low, high', [('light', 0.03, 0.15), ('heavy', 0.15, 0.4)])
def test_preset_density(preset, low, high):
    """Streak density (fraction of pixels with R > 0.1) of each preset over several seeds."""
    clean = np.full((256, 256, 3), 0.3, np.float32)  # no saturation: density depends on the rain only
    densities = [streak_coverage(synthesize_rain(clean, preset, seed=s)[1]) for s in range(4)]
    assert all(low <= d <= high for d in densities), densities


def dominant_direction_share(rain, tolerance=10):
    """Share of rain pixels whose direction lies within ``tolerance`` degrees of the median direction.

    Each pixel's direction is the angle of the oriented line filter (5 degree steps) that responds
    most there, a standard line-orientation estimate independent of how the rain was drawn.
    """
    angles = np.arange(-45, 46, 5)
    responses = []
    for angle in angles:
        line = np.zeros((15, 15), np.float32)
        dx, dy = 7 * math.sin(math.radians(angle)), 7 * math.cos(math.radians(angle))
        cv2.line(line, (round(7 - dx), round(7 - dy)), (round(7 + dx), round(7 + dy)), 1.0, 1, cv2.LINE_AA)
        responses.append(cv2.filter2D(rain, -1, line / line.sum()))
    best = angles[np.argmax(responses, axis=0)[rain > 0.1]]
    return float(np.mean(np.abs(best - np.median(best)) <= tolerance))


def test_light_has_one_direction_heavy_several():
    clean = np.full((256, 256), 0.3, np.float32)
    for seed in range(4):
        light = dominant_direction_share(synthesize_rain(clean, 'light', seed=seed)[1])
        heavy = dominant_direction_share(synthesize_rain(clean, 'heavy', seed=seed)[1])
        assert light > 0.75, (seed, light)
        assert heavy < 0.65, (seed, heavy)


def test_streak_coverage_definition():
    rain = np.zeros((10, 10), np.float32)
    rain[:2] = 0.5
    rain[2, :5] = 0.05  # below the threshold
    assert streak_coverage(rain) == pytest.approx(0.2)
    assert streak_coverage((rain * 255).astype(np.uint8)) == pytest.approx(0.2)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="unknown preset 'drizzle'"):
        synthesize_rain(np.zeros((8, 8), np.uint8), 'drizzle')
    with pytest.raises(ValueError, match='values in \\[0, 1\\]'):
        synthesize_rain(np.full((8, 8), 3.0), 'light')
    with pytest.raises(ValueError, match='dtype must be uint8 or float'):
        synthesize_rain(np.zeros((8, 8), np.int32), 'light')
    with pytest.raises(ValueError, match='H x W'):
        synthesize_rain(np.zeros(8, np.uint8), 'light')


@pytest.mark.slow  # the script in a subprocess: 4 s
def test_synthesize_rain_script(tmp_path, monkeypatch, capsys):
    clean_dir, rainy_dir = tmp_path / 'clean', tmp_path / 'rainy'
    clean_dir.mkdir()
    colour = textured(40, 56)
    grey16 = (textured(40, 56)[..., 0].astype(np.uint16) * 200)
    cv2.imwrite(str(clean_dir / 'a.png'), colour)
    cv2.imwrite(str(clean_dir / 'b.png'), grey16)
    (clean_dir / 'notes.txt').write_text('not an image')
    proc = run_entry([os.path.join(REPO, 'scripts', 'synthesize_rain.py'), '--input', str(clean_dir), '--output',
                      str(rainy_dir), '--preset', 'heavy', '--seed', '5'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 2 rainy images ('heavy' rain, seed 5)" in proc.stdout
    assert sorted(os.listdir(rainy_dir)) == ['a.png', 'b.png']
    rainy = cv2.imread(str(rainy_dir / 'a.png'), cv2.IMREAD_UNCHANGED)
    rainy16 = cv2.imread(str(rainy_dir / 'b.png'), cv2.IMREAD_UNCHANGED)
    assert rainy.shape == colour.shape and rainy16.dtype == np.uint16 and rainy16.shape == grey16.shape
    assert (rainy >= colour).all() and (rainy > colour).any() and (rainy16 >= grey16).all()
    # the rain of a file depends on the seed and its name only, not on the other files
    (clean_dir / 'b.png').unlink()
    monkeypatch.setattr(sys, 'argv', ['synthesize_rain.py', '--input', str(clean_dir), '--output',
                                      str(tmp_path / 'again'), '--preset', 'heavy', '--seed', '5'])
    load_script('synthesize_rain').main()
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'again' / 'a.png')), rainy)

    def fails(*args):
        monkeypatch.setattr(sys, 'argv', ['synthesize_rain.py', *args])
        with pytest.raises(SystemExit):
            load_script('synthesize_rain').main()
        return capsys.readouterr().err

    assert 'is not a folder' in fails('--input', str(tmp_path / 'missing'), '--output', str(rainy_dir))
    assert '--output must differ from --input' in fails('--input', str(clean_dir), '--output', str(clean_dir))
    assert "--preset 'drizzle' is unknown" in fails('--input', str(clean_dir), '--output', str(rainy_dir),
                                                     '--preset', 'drizzle')
    (tmp_path / 'empty').mkdir()
    assert 'holds no images' in fails('--input', str(tmp_path / 'empty'), '--output', str(rainy_dir))
    (clean_dir / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(SystemExit, match='cannot read image .*broken.png'):
        load_script('synthesize_rain').rain_on_file(str(clean_dir / 'broken.png'), str(rainy_dir / 'x.png'), 'light', 0)
