"""The benchmark's inference measurements: whole images of a few sides, and a large image in tiles."""
import torch

from dsmnet_arch.benchmarks.reference import spec_flops
from dsmnet_arch.benchmarks.timing import PeakMemory, best_time, first_call, synchronize
from dsmnet_arch.precision import COMPILE_DEFAULTS
from dsmnet_arch.tiling import count_tiles, tile_side, tiled_forward


def inference(net, side, device, autocast, repeats, num_feat, compile=False):
    """Forward time and peak memory of one side x side image, whole; ``compile``: through ``torch.compile``
    (the first call's time, compiling included, is ``first_call_seconds``)."""
    x = torch.rand(1, 3, side, side, device=device)
    model = torch.compile(net, **COMPILE_DEFAULTS) if compile else net

    def run():
        with torch.no_grad(), autocast:
            model(x)

    first = first_call(run, device) if compile else None
    with PeakMemory(device) as peak:
        seconds = best_time(run, repeats, device)
    gflop = spec_flops(num_feat, x.shape, train=False) / 1e9
    return dict(shape=list(x.shape), seconds=seconds, ms_per_mp=seconds * 1e3 / (side * side / 1e6),
                gflops=gflop / seconds, peak_bytes=peak.bytes, first_call_seconds=first)


def least_work_tile(height, width, largest, overlap, multiple):
    """The tile side up to ``largest`` for which tiled_forward computes the fewest pixels."""

    def pixels(tile):
        return count_tiles(height, width, tile, overlap, multiple) * (
            tile_side(tile, height, multiple) * tile_side(tile, width, multiple))

    return min(range(2 * overlap + multiple, largest + 1), key=lambda tile: (pixels(tile), -tile))


def tiled_inference(net, cfg, device, autocast):
    """One timed tiled forward pass of a large image (kept on the CPU, tiles on ``device``), in batches
    of tiles as ``dsmnet-derain`` runs them (4 on a GPU, else 1).

    The peak memory includes the input image and the output.
    """
    height, width = cfg['large']
    multiple = net.pad_multiple
    overlap = cfg['overlap']
    batch = 4 if device.type == 'cuda' else 1
    tile = least_work_tile(height, width, cfg['tile'], overlap, multiple)
    sides = [tile_side(tile, height, multiple), tile_side(tile, width, multiple)]
    with torch.inference_mode(), autocast:  # warm-up on one tile: the shape every tile has
        net(torch.rand(1, 3, *sides, device=device))
    synchronize(device)

    def run(img):
        with torch.inference_mode(), autocast:
            tiled_forward(net, img, tile=tile, overlap=overlap, batch_size=batch, multiple=multiple, device=device)

    with PeakMemory(device) as peak:
        img = torch.rand(1, 3, height, width)
        seconds = first_call(lambda: run(img), device)
    tiles = count_tiles(height, width, tile, overlap, multiple)
    return dict(shape=[1, 3, height, width], tile=sides, overlap=overlap, tiles=tiles, batch=batch,
                computed_pixels_ratio=tiles * sides[0] * sides[1] / (height * width), seconds=seconds,
                ms_per_mp=seconds * 1e3 / (height * width / 1e6), peak_bytes=peak.bytes)
