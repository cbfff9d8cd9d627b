"""dsmnet_arch.tiling against hand-computed values: the blending ramps, tile counts, the memory probe
and the free-memory readings behind ``--tile auto``, and the tiled forward pass against the whole image."""
import io
import math
import re

import numpy as np
import pytest
import torch

from dsmnet_arch import tiling
from dsmnet_arch.tiling import (
    DEFAULT_OVERLAP,
    _PeakTensorMemory,
    activation_bytes_per_pixel,
    auto_tile,
    axis_weights,
    count_tiles,
    free_memory,
    tile_side,
    tile_starts,
    tiled_forward,
)

from basicsr.metrics.psnr_ssim import calculate_psnr_pt

from conftest import small_dsmnet, smooth_image, to_tensor


def test_two_tiles_crossfade_with_the_raised_cosine_values():
    # 10 pixels, tiles of 6 at 0 and 4: the overlap is pixels 4 and 5, centred at 5, as wide as 2; the
    # pixel centres 4.5 and 5.5 sit a quarter and three quarters into the ramp: sin^2(pi/8) = (2 - sqrt 2) / 4
    assert tile_starts(10, 6, 2) == [0, 4]
    low, high = (2 - math.sqrt(2)) / 4, (2 + math.sqrt(2)) / 4
    first, second = axis_weights(10, 6, [0, 4])
    torch.testing.assert_close(first, torch.tensor([1, 1, 1, 1, high, low]), atol=0, rtol=0)
    torch.testing.assert_close(second, torch.tensor([low, high, 1, 1, 1, 1]), atol=0, rtol=0)


def ramp(p, left, right, tile):
    """Weight of the later of two tiles starting at ``left`` and ``right`` at pixel ``p``, from the docstring:
    a raised-cosine step centred in the overlap and as wide as the overlap, but no wider than the stride."""
    width, centre = min(left + tile - right, right - left), (left + tile + right) / 2
    t = min(max((p + 0.5 - centre) / width + 0.5, 0.0), 1.0)
    return math.sin(t * math.pi / 2)**2


def test_weights_are_the_float64_ramp_rounded_once_to_float32():
    length, tile = 150, 64
    starts = tile_starts(length, tile, 16)
    assert starts == [0, 43, 86]  # overlaps of 21 pixels
    for k, (start, got) in enumerate(zip(starts, axis_weights(length, tile, starts))):
        want = []
        for p in range(start, start + tile):
            w = ramp(p, starts[k - 1], start, tile) if k > 0 else 1.0
            want.append(w * (1 - ramp(p, start, starts[k + 1], tile)) if k < 2 else w)
        assert torch.equal(got, torch.tensor(want, dtype=torch.float64).float())


def test_crossfade_is_capped_at_the_tile_stride():
    # tiles of 8 at 0, 2, 4 overlap by 6 pixels but step by 2: each ramp is 2 pixels wide (centred at 5 and
    # at 7), so the middle tile's rising and falling ramps do not overlap
    weights = axis_weights(12, 8, [0, 2, 4])
    low, high = (2 - math.sqrt(2)) / 4, (2 + math.sqrt(2)) / 4
    torch.testing.assert_close(weights[0], torch.tensor([1, 1, 1, 1, high, low, 0, 0]), atol=0, rtol=0)
    torch.testing.assert_close(weights[1], torch.tensor([0, 0, low, high, high, low, 0, 0]), atol=0, rtol=0)
    torch.testing.assert_close(weights[2], torch.tensor([0, 0, low, high, 1, 1, 1, 1]), atol=0, rtol=0)


def fewest_tiles(length, tile, overlap):
    """The fewest tiles of ``tile`` pixels that cover ``length`` with neighbours overlapping by ``overlap``."""
    n = 1
    while n * tile - (n - 1) * overlap < length:
        n += 1
    return n


def test_count_tiles_without_and_with_a_padding_multiple():
    # 103 pixels: tiles of 40 cover it three times with 8 pixels of overlap (3 * 40 - 2 * 8 = 104); a model
    # padding to multiples of 2 gets 39-pixel tiles (odd like the image), of which 3 cover only 101
    assert count_tiles(103, 103, 40, 8) == fewest_tiles(103, 40, 8)**2 == 9
    assert count_tiles(103, 103, 40, 8, multiple=2) == fewest_tiles(103, 39, 8)**2 == 16
    assert count_tiles(103, 50, 40, 8) == 3 * 2 and count_tiles(103, 50) == 1


def test_peak_tensor_memory_counts_each_storage_once_while_it_lives():
    with _PeakTensorMemory() as memory:
        a = torch.ones(1000)  # 4000 bytes
        b = a.view(10, 100)  # the same storage: nothing new
        c = a + 1  # 4000 bytes more
        assert (memory.live, memory.peak) == (8000, 8000)
        del c
        assert (memory.live, memory.peak) == (4000, 8000)
        for _ in range(20):  # made and freed again and again: Python reuses the freed objects' addresses
            t = torch.ones(100)
            assert memory.live == 4400
            del t
        del a, b
        assert (memory.live, memory.peak) == (0, 8000)
    with _PeakTensorMemory() as idle:
        pass
    assert (idle.live, idle.peak) == (0, 0)


def test_auto_tile_is_the_largest_multiple_of_32_that_fits():
    # budget / bytes per pixel = 1e6 pixels: sqrt is 1000, the multiple of 32 below is 992
    assert auto_tile(1000, 4000, 3000, budget=1e9) == 992
    assert auto_tile(1000, 4000, 3000, budget=1e9, batch_size=2) == 704  # sqrt(5e5) = 707.1
    # the smallest tile exceeds twice the overlap by 32 or more: overlap 32 -> 96; a budget of exactly 96 x 96
    # pixels gets it
    assert auto_tile(1000, 4000, 3000, budget=96 * 96 * 1000, overlap=32) == 96
    with pytest.raises(MemoryError, match='even a 96x96 tile'):
        auto_tile(1000, 4000, 3000, budget=96 * 96 * 1000 - 1, overlap=32)
    # overlap 65: 2 * 65 + 32 = 162, rounded up to 192
    with pytest.raises(MemoryError, match='even a 192x192 tile'):
        auto_tile(1000, 4000, 3000, budget=191 * 191 * 1000, overlap=65)
    assert auto_tile(1000, 4000, 3000, budget=192 * 192 * 1000, overlap=65) == 192


def test_not_enough_memory_names_the_budget_and_the_cost_per_pixel():
    message = 'Not enough free memory for even a 160x160 tile (3 MiB available, about 100.0 KiB per pixel)'
    with pytest.raises(MemoryError, match=f'^{re.escape(message)}$'):
        auto_tile(100 * 1024, 4000, 3000, budget=3 * 2**20, overlap=64)


def fake_meminfo(monkeypatch, text):
    def fake_open(path, *args, **kwargs):
        if path != '/proc/meminfo' or text is None:
            raise FileNotFoundError(path)
        return io.StringIO(text)

    monkeypatch.setattr(tiling, 'open', fake_open, raising=False)  # the module's open, before the builtin


def fake_sysconf(monkeypatch, values):
    def sysconf(name):
        if name not in values:
            raise ValueError(f'unrecognized configuration name {name}')
        return values[name]

    monkeypatch.setattr(tiling.os, 'sysconf', sysconf)


def test_free_memory_on_the_cpu_is_memavailable(monkeypatch):
    fake_sysconf(monkeypatch, {'SC_AVPHYS_PAGES': 7, 'SC_PAGE_SIZE': 4096})
    fake_meminfo(monkeypatch, 'MemTotal:       16000000 kB\nMemFree:          500000 kB\nMemAvailable:    1234567 kB\n')
    assert free_memory('cpu') == 1234567 * 1024
    assert free_memory(torch.device('cpu')) == 1234567 * 1024
    # no MemAvailable line (old kernels) or no /proc: the free pages
    fake_meminfo(monkeypatch, 'MemTotal:       16000000 kB\nMemFree:          500000 kB\n')
    assert free_memory('cpu') == 7 * 4096
    fake_meminfo(monkeypatch, None)
    assert free_memory('cpu') == 7 * 4096
    fake_sysconf(monkeypatch, {})
    with pytest.raises(RuntimeError, match='^Cannot tell the free memory of this machine; give --tile a size$'):
        free_memory('cpu')


def test_free_memory_on_cuda_counts_the_cached_blocks(monkeypatch):
    device = torch.device('cuda', 1)

    def on_device(value):
        def query(d):
            assert torch.device(d) == device
            return value
        return query

    monkeypatch.setattr(torch.cuda, 'mem_get_info', on_device((1000, 8000)))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', on_device(300))
    monkeypatch.setattr(torch.cuda, 'memory_allocated', on_device(200))
    fake_meminfo(monkeypatch, None)  # the CPU's memory plays no part
    assert free_memory('cuda:1') == 1000 + 300 - 200


def test_free_memory_of_this_machine():
    assert free_memory('cpu') > 0


@pytest.mark.parametrize('length,tile,overlap', [(100, 32, 8), (33, 32, 8), (257, 64, 16), (10, 32, 8), (97, 40, 0),
                                                 (113, 64, 16)])
def test_tiles_cover_the_axis_with_the_overlap_and_weights_sum_to_one(length, tile, overlap):
    tile = min(tile, length)
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    steps = np.diff(starts)
    assert (steps > 0).all() and (steps <= tile - overlap).all()
    if len(starts) > 1:  # the fewest tiles: one less could not cover the axis with this overlap
        assert (len(starts) - 2) * (tile - overlap) + tile < length
    weights = axis_weights(length, tile, starts)
    total = torch.zeros(length)
    for start, w in zip(starts, weights):
        assert w.shape == (tile, ) and (w >= 0).all()
        total[start:start + tile] += w
    torch.testing.assert_close(total, torch.ones(length))
    # a tile's weight is 1 where no other tile reaches, in particular at the image borders
    assert weights[0][0] == 1 and weights[-1][-1] == 1


@pytest.mark.parametrize('size,tile,overlap,batch', [((7, 5), 16, 4, 1), ((37, 53), 16, 4, 3), ((64, 64), 24, 8, 2),
                                                     ((40, 9), 16, 0, 5)])
def test_tiled_forward_of_a_pointwise_model_equals_the_whole_image(size, tile, overlap, batch):
    # with no spatial context, every tile computes exactly the whole image's values: only the blending shows
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 2, 1)
    x = torch.rand(2, 3, *size)
    calls = []
    with torch.no_grad():
        expected = model(x)
    out = tiled_forward(model, x, tile, overlap, batch_size=batch, progress=calls.append)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    tiles = count_tiles(*size, tile, overlap)
    assert sum(calls) == 2 * tiles and max(calls) <= batch
    assert tiles == len(tile_starts(size[0], min(tile, size[0]), overlap)) * len(
        tile_starts(size[1], min(tile, size[1]), overlap))


def test_tiled_dsmnet_matches_the_whole_image_at_the_default_overlap():
    # DSMNet's channel attention pools over the whole input and its subspace attention normalises
    # over all positions, so tiles cannot be exact; the documented tolerance is >= 40 dB
    model = small_dsmnet(num_levels=3)
    tile = 2 * DEFAULT_OVERLAP + 32
    x = to_tensor(smooth_image(tile + 37, tile + 53))  # odd sizes, 2 x 2 tiles
    with torch.no_grad():
        whole = model(x)
    tiled = tiled_forward(model, x, tile, DEFAULT_OVERLAP, batch_size=3, multiple=4)
    assert count_tiles(*x.shape[-2:], tile, DEFAULT_OVERLAP, multiple=4) == 4
    assert calculate_psnr_pt(tiled.clamp(0, 1), whole.clamp(0, 1), crop_border=0).item() >= 40
    # the model does change the image, so the agreement is not trivial
    assert calculate_psnr_pt(whole.clamp(0, 1), x, crop_border=0).item() < 35
    torch.testing.assert_close(tiled_forward(model, x, tile, DEFAULT_OVERLAP, multiple=4), tiled, atol=1e-5, rtol=1e-5)


def test_tile_sides_keep_the_remainder_of_the_models_padding_multiple():
    assert [tile_side(96, length, 8) for length in (133, 136, 90, 97)] == [93, 96, 90, 89]
    assert tile_side(None, 50, 8) == 50 and tile_side(96, 133) == 96


def test_tile_must_exceed_twice_the_overlap():
    with pytest.raises(ValueError, match='Tile size 16 must exceed twice the tile overlap 8'):
        tiled_forward(torch.nn.Identity(), torch.rand(1, 3, 40, 40), 16, 8)
    # a tile as large as the image needs no overlap
    assert tiled_forward(torch.nn.Identity(), torch.rand(1, 3, 10, 12), 16, 8).shape == (1, 3, 10, 12)


def test_activation_memory_is_measured_per_pixel():
    # conv 3 -> 16 -> 16: the peak holds both 16-channel float maps, 2 * 16 * 4 bytes per pixel
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1))
    assert activation_bytes_per_pixel(model) == pytest.approx(2 * 16 * 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # bf16 maps; the bf16 copies of the weights are not per pixel
        assert activation_bytes_per_pixel(model) == pytest.approx(2 * 16 * 2)


def test_auto_tile_fits_the_budget():
    assert auto_tile(1000, 100, 100, budget=1e7) is None  # the whole image fits
    side = auto_tile(1000, 4000, 3000, budget=1e9, batch_size=2)
    assert side % 32 == 0 and 2 * side**2 * 1000 <= 1e9 < 2 * (side + 32)**2 * 1000
    with pytest.raises(MemoryError, match='Not enough free memory for even a 96x96 tile'):
        auto_tile(1000, 4000, 3000, budget=1e6, overlap=32)
