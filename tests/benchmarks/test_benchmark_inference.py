"""dsmnet_arch.benchmarks.inference: the tile the tiled measurement uses computes the fewest pixels."""
import math

import pytest

from dsmnet_arch.benchmarks.inference import least_work_tile
from dsmnet_arch.tiling import count_tiles


def computed_pixels(tile, height, width, overlap, multiple):
    """Pixels a tiled pass computes, from the tiling rules of docs/inference.md (not from the code):
    a tile side matches the image's remainder modulo the padding multiple, and the fewest tiles of
    that side that overlap by at least ``overlap`` cover each axis."""
    total = 1
    for length in (height, width):
        side = length if tile >= length else tile - (tile - length) % multiple
        count = 1 if side >= length else math.ceil((length - overlap) / (side - overlap))
        total *= count * side
    return total


@pytest.mark.parametrize('largest, layout', [(1088, (1048, 1048, 3, 4)), (640, (560, 560, 6, 8))])
def test_least_work_tile_covers_large_image_with_fewest_pixels(largest, layout):
    tile = least_work_tile(3000, 4000, largest, 64, 8)
    candidates = range(2 * 64 + 8, largest + 1)
    fewest = min(computed_pixels(t, 3000, 4000, 64, 8) for t in candidates)
    assert computed_pixels(tile, 3000, 4000, 64, 8) == fewest
    assert tile == max(t for t in candidates if computed_pixels(t, 3000, 4000, 64, 8) == fewest)  # ties: larger
    side_h, side_w, rows, cols = layout  # 12 MP in 3 x 4 tiles of 1048 (1.10x), or 6 x 8 of 560 (1.25x)
    assert computed_pixels(tile, 3000, 4000, 64, 8) == rows * side_h * cols * side_w
    assert count_tiles(3000, 4000, tile, 64, 8) == rows * cols
