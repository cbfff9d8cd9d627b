"""Tiled forward pass of an image-to-image network, for images too large to process at once.

Model-agnostic: any ``model`` that maps a ``(B, C, h, w)`` batch to a ``(B, C', h, w)`` batch
of the same spatial size works. The image is cut into overlapping tiles of equal size; each
output pixel is a weighted sum of the tiles that cover it, with weights that sum to exactly one.

Seams. Along each axis, consecutive tiles overlap by at least ``overlap`` pixels. Inside an
overlap, the earlier tile's weight falls from 1 to 0 along a raised-cosine ramp centred in the
overlap while the later tile's weight rises by the same amount, so seams blend smoothly and the
pixels right at a tile's cut edge, which miss context, get little weight. Tile edges that lie on
the image border are not ramped, and tile sides keep the image's remainder modulo the model's
padding multiple, so a tile on the image border is padded exactly like the whole image.

Memory. Only one batch of tiles is on the model's device at a time; the full-size input and the
output accumulator stay on the input's device. :func:`auto_tile` picks the largest tile whose
activations fit a share of the free memory, from a per-pixel activation cost measured on a
small probe by :func:`activation_bytes_per_pixel`.
"""
import math
import os
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

#: Default least overlap of neighbouring tiles, in pixels (see docs/inference.md for the measurements).
DEFAULT_OVERLAP = 64


def tile_side(tile, length, multiple=1):
    """Side of the tiles along an axis of ``length`` pixels: at most ``tile``, and congruent to
    ``length`` modulo ``multiple``; the whole axis when ``tile`` is ``None`` or not smaller.

    A model that pads its input at the bottom and right to a multiple of ``multiple`` then pads
    the tiles on those image borders exactly as it pads the whole image.
    """
    if tile is None or tile >= length:
        return length
    return tile - (tile - length) % multiple


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` overlap.

    Uses the fewest tiles that give this overlap and spreads them evenly, so the first tile starts
    at 0 and the last one ends at ``length``. A tile as large as the axis gives one tile.
    """
    if tile >= length:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _rise(coords, centre, width):
    """Raised-cosine step from 0 to 1 of the given width, centred at ``centre``, sampled at ``coords``."""
    t = ((coords - centre) / width + 0.5).clamp(0, 1)
    return torch.sin(t * (math.pi / 2))**2


def axis_weights(length, tile, starts):
    """Blending weights of each tile along one axis: a list of 1D tensors of size ``tile``.

    Between tiles k and k+1 the overlap is ``[starts[k+1], starts[k] + tile)``; the crossfade
    is centred there and as wide as the overlap, capped at the tile stride so that the two ramps
    of a tile never meet. Summed over all tiles, the weights are exactly one at every position.
    """
    coords = torch.arange(length, dtype=torch.float64) + 0.5  # pixel centres
    rises = []
    for left, right in zip(starts[:-1], starts[1:]):
        width = min(left + tile - right, right - left)
        rises.append(_rise(coords, (right + left + tile) / 2, width))
    weights = []
    for k, start in enumerate(starts):
        w = torch.ones(length, dtype=torch.float64)
        if k > 0:
            w = w * rises[k - 1]
        if k < len(starts) - 1:
            w = w * (1 - rises[k])
        weights.append(w[start:start + tile].float())
    return weights


@torch.no_grad()
def tiled_forward(model, img, tile=None, overlap=DEFAULT_OVERLAP, batch_size=1, multiple=1, device=None,
                  progress=None):
    """Run ``model`` on ``img`` tile by tile and blend the tiles into one output.

    Args:
        model (callable): maps a ``(B, C, h, w)`` tensor to a ``(B, C', h, w)`` tensor.
        img (Tensor): ``(N, C, H, W)`` input, on any device; the output is returned there in float32.
        tile (int | None): tile side in pixels; ``None`` (or a tile as large as the image) runs the
            whole image at once. Images smaller than the tile along an axis use one tile there.
        overlap (int): least overlap of neighbouring tiles, in pixels; needs ``tile > 2 * overlap``.
        batch_size (int): tiles per forward pass (all tiles have the same size).
        multiple (int): the model pads its input at the bottom and right to a multiple of this
            (DSMNet: 2 ** (num_levels - 1)); tile sides keep the image's remainder (:func:`tile_side`).
        device (torch.device | None): where the model runs; default: its parameters' device, else
            the input's.
        progress (callable | None): called with the number of tiles finished after each batch
            (e.g. ``tqdm.update``).

    Returns:
        Tensor: ``(N, C', H, W)`` float32 output on ``img``'s device.
    """
    n, _, height, width = img.shape
    tile_h, tile_w = tile_side(tile, height, multiple), tile_side(tile, width, multiple)
    split = [side for side, length in ((tile_h, height), (tile_w, width)) if side < length]
    if split and min(split) <= 2 * overlap:
        raise ValueError(f'Tile size {tile} must exceed twice the tile overlap {overlap}'
                         + (f' by at least {multiple - 1}' if multiple > 1 else ''))
    if device is None:
        param = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) else None
        device = param.device if param is not None else img.device
    ys, xs = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    wys, wxs = axis_weights(height, tile_h, ys), axis_weights(width, tile_w, xs)
    jobs = [(i, a, b) for i in range(n) for a in range(len(ys)) for b in range(len(xs))]

    out = None
    for first in range(0, len(jobs), batch_size):
        batch = jobs[first:first + batch_size]
        tiles = torch.stack([img[i, :, ys[a]:ys[a] + tile_h, xs[b]:xs[b] + tile_w] for i, a, b in batch])
        result = model(tiles.to(device)).to(img.device, torch.float32)
        if out is None:
            out = img.new_zeros((n, result.shape[1], height, width), dtype=torch.float32)
        for tile_out, (i, a, b) in zip(result, batch):
            weight = (wys[a][:, None] * wxs[b][None, :]).to(img.device)
            out[i, :, ys[a]:ys[a] + tile_h, xs[b]:xs[b] + tile_w] += tile_out * weight
        if progress is not None:
            progress(len(batch))
    return out


def count_tiles(height, width, tile=None, overlap=DEFAULT_OVERLAP, multiple=1):
    """Number of tiles :func:`tiled_forward` uses for one ``height x width`` image."""
    return (len(tile_starts(height, tile_side(tile, height, multiple), overlap)) *
            len(tile_starts(width, tile_side(tile, width, multiple), overlap)))


class _PeakTensorMemory(TorchDispatchMode):
    """Tracks the bytes of tensor storages alive during a computation and their peak.

    Every storage an operator returns is counted once when it appears and uncounted when it is
    freed (weakref finalizer), so ``peak`` is the largest total of live intermediate tensors.
    Temporary buffers inside a single kernel (e.g. convolution workspaces) are not seen.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self._seen:
                    self._seen.add(id(storage))
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._freed, id(storage), storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out

    def _freed(self, key, nbytes):
        self._seen.discard(key)
        self.live -= nbytes


@torch.no_grad()
def activation_bytes_per_pixel(model, in_channels=3, device=None, probe_sizes=(64, 128)):
    """Peak activation memory of one forward pass per input pixel, measured on two small probes.

    Runs ``model`` on random ``probe x probe`` inputs and records the peak bytes of live tensors
    (see :class:`_PeakTensorMemory`); the slope between the two probes is the per-pixel cost,
    which leaves out constant overheads. A first, unmeasured run creates what is made once (e.g.
    autocast's low-precision copies of the weights). Call it under the same autocast context as
    the real run, since the precision changes the cost.
    """
    if device is None:
        device = next(model.parameters()).device
    model(torch.rand(1, in_channels, probe_sizes[0], probe_sizes[0], device=device))
    peaks = []
    for size in probe_sizes:
        x = torch.rand(1, in_channels, size, size, device=device)
        with _PeakTensorMemory() as tracker:
            model(x)
        peaks.append(tracker.peak)
    return (peaks[1] - peaks[0]) / (probe_sizes[1]**2 - probe_sizes[0]**2)


def free_memory(device):
    """Bytes the model may still allocate on ``device``: free CUDA memory plus the blocks PyTorch
    has cached but not handed out; on the CPU, the available RAM (``MemAvailable``), else free RAM."""
    device = torch.device(device)
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (ValueError, OSError, AttributeError):
        raise RuntimeError('Cannot tell the free memory of this machine; give --tile a size') from None


def auto_tile(bytes_per_pixel, height, width, budget, batch_size=1, overlap=DEFAULT_OVERLAP):
    """Largest tile whose batch of activations fits ``budget`` bytes, or ``None`` if the whole image fits.

    A batch of ``batch_size`` tiles of side ``T`` needs about ``batch_size * T * T * bytes_per_pixel``.
    The tile is a multiple of 32 pixels and exceeds ``2 * overlap`` by at least 32 (room for
    :func:`tile_side` to adjust it for models that pad to multiples of up to 32).
    """
    if height * width * bytes_per_pixel <= budget:
        return None
    side = int(math.sqrt(budget / (batch_size * bytes_per_pixel))) // 32 * 32
    smallest = (2 * overlap + 31) // 32 * 32 + 32
    if side < smallest:
        raise MemoryError(f'Not enough free memory for even a {smallest}x{smallest} tile '
                          f'({budget / 2**20:.0f} MiB available, about {bytes_per_pixel / 1024:.1f} KiB per pixel)')
    return side
