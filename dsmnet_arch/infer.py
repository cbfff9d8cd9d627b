"""Derain photos with trained DSM-Net weights: no options file or paired data needed.

Usage::

    dsmnet-derain -i photo.jpg -o derained                        # the bundled weights (synthetic rain)
    dsmnet-derain -i 'photos/**/*.jpg' -o derained --weights W.pth --tile 512 --compare
    dsmnet-derain -i clip.mp4 -o derained --weights W.pth         # every frame, audio copied (PyAV)
    dsmnet-derain --serve --weights W.pth                          # a local web page (Gradio)

INPUT is an image or video file, a folder (``--recursive`` for its subfolders) or a glob pattern.
Each output keeps its input's name (and subfolder), size, bit depth and format, unless ``--ext``
asks for another image format. Photos, videos (:mod:`dsmnet_arch.video`) and the web page
(:mod:`dsmnet_arch.web`) all go through :func:`setup_deraining` and :class:`Deraining`; photos,
on the command line and on the page, through :func:`derain_file`. See docs/inference.md for
formats, tiling and measured figures.
"""
import argparse
import glob
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from dsmnet_arch.loading import build_model, weights_or_bundled
from dsmnet_arch.precision import COMPILE_DEFAULTS, PRECISIONS, auto_precision, inference_autocast
from dsmnet_arch.tiling import (
    DEFAULT_OVERLAP,
    activation_bytes_per_pixel,
    auto_tile,
    count_tiles,
    free_memory,
    tiled_forward,
)
from dsmnet_arch.utils import IMAGE_EXTENSIONS, keep_freed_memory
from dsmnet_arch.video import VIDEO_EXTENSIONS, derain_video

from basicsr.utils import img2tensor, tensor2img

SIXTEEN_BIT_EXTENSIONS = ('.png', '.tif', '.tiff')  # the others store 8 bits per sample
NO_ALPHA_EXTENSIONS = ('.jpg', '.jpeg')
#: Share of the free memory that ``--tile auto`` lets one batch of tiles use; the rest is headroom
#: for the allocator, convolution workspaces and the full-size image buffers.
MEMORY_SHARE = 0.5
#: Errors that fail one file (reported by name, the others go on): unreadable or unwritable files,
#: and RuntimeError for torch's out-of-memory errors (the next file may still fit).
FILE_ERRORS = (ValueError, OSError, MemoryError, RuntimeError, cv2.error)


# ----------------------------------------------------------------------------- inputs and outputs

def find_images(spec, recursive=False):
    """Images and videos named by ``spec``: ``(path, relative output name)`` pairs, sorted.

    ``spec`` is a file (taken whatever its extension), a folder (its image files, with
    ``recursive`` also those of its subfolders, named relative to the folder) or a glob pattern
    (``**`` matches subfolders; named relative to the pattern's fixed leading folders).
    """
    path = Path(spec)
    if path.is_file():
        return [(path, Path(path.name))]
    if path.is_dir():
        root, candidates = path, (path.rglob('*') if recursive else path.iterdir())
    elif glob.has_magic(spec):
        fixed = []
        for part in path.parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        root, candidates = Path(*fixed) if fixed else Path('.'), map(Path, glob.glob(spec, recursive=True))
    else:
        raise ValueError(f'Input not found: {spec}')
    images = sorted((p, p.relative_to(root)) for p in candidates
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    if not images:
        raise ValueError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) or videos ({", ".join(VIDEO_EXTENSIONS)}) '
                         f'found in {spec}')
    return images


def plan_outputs(images, outdir, ext=None, compare=False):
    """Output path (and side-by-side path, or ``None``) of every input: ``[(src, dst, cmp)]``.

    Outputs go to ``outdir/<relative name>`` with the input's extension or ``ext`` (images only:
    videos keep theirs); side-by-side images to ``outdir/compare/<relative name>``. Raises
    ``ValueError`` when an output would overwrite an input, or two inputs would be written to the
    same file.
    """
    outdir = Path(outdir)
    plan = []
    for src, rel in images:
        if ext is not None and not is_video(src):
            rel = rel.with_suffix(ext)
        plan.append((src, outdir / rel, outdir / 'compare' / rel if compare else None))
    inputs = {src.resolve(): src for src, _, _ in plan}
    written = {}
    for src, *targets in plan:
        for dst in filter(None, targets):
            key = dst.resolve()
            if key in inputs or (dst.exists() and any(dst.samefile(s) for s in inputs.values())):
                raise ValueError(f'Refusing to write {dst}: it would overwrite the input {inputs.get(key, dst)}; '
                                 'choose an output folder outside the inputs')
            if key in written:
                raise ValueError(f'{written[key]} and {src} would both be written to {dst}; use --ext or '
                                 'separate runs')
            written[key] = src
    return plan


def is_video(path):
    """Whether ``path`` is taken as a video (by its extension)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


_PILLOW_LIMIT = threading.Lock()


def image_pixels(path):
    """Width x height from the file's header (nothing decoded), or ``None`` if Pillow cannot tell."""
    from PIL import Image
    with _PILLOW_LIMIT:  # Pillow's own limit would refuse the very headers this is for (> 179 MP)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as img:
                return img.width * img.height
        except Exception:  # Pillow's errors for files it does not know vary (OSError, ValueError, SyntaxError)
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def read_image(path, max_pixels=None):
    """Read an image file for the network.

    Returns ``(bgr, alpha, gray, dtype)``: ``bgr`` is float32 ``H x W x 3`` in [0, 1] (a gray
    image repeated to three channels), ``alpha`` the untouched alpha channel or ``None``,
    ``gray`` whether the file is single-channel, ``dtype`` its sample type (uint8 or uint16).
    The EXIF orientation is applied (photos come out upright), except to images with alpha.
    Raises ``ValueError`` for unreadable files, other sample types and images of more than
    ``max_pixels`` pixels (read off the header before decoding, where Pillow knows the format).
    """
    if max_pixels is not None:
        pixels = image_pixels(path)
        if pixels is not None and pixels > max_pixels:
            raise ValueError(too_large(pixels, max_pixels))
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ValueError('not a readable image (corrupt, empty or of an unknown format)')
    if img.ndim == 2 or img.shape[2] < 4:  # no alpha: decode again with the EXIF orientation applied
        img = cv2.imdecode(data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'unsupported sample type {img.dtype} (8- and 16-bit images only)')
    if max_pixels is not None and img.shape[0] * img.shape[1] > max_pixels:
        raise ValueError(too_large(img.shape[0] * img.shape[1], max_pixels))
    gray = img.ndim == 2
    alpha = img[..., 3].copy() if not gray and img.shape[2] == 4 else None
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if gray else img[..., :3]
    return bgr.astype(np.float32) / np.iinfo(img.dtype).max, alpha, gray, img.dtype


def too_large(pixels, max_pixels):
    return f'{pixels:,} pixels, more than the limit of {max_pixels:,} (--max-pixels)'


def to_file_image(bgr, alpha, gray, dtype, ext):
    """Turn a float BGR result back into the input's layout: gray or colour, alpha, bit depth.

    The bit depth drops to 8 for formats without 16-bit samples (jpg, bmp, webp) and alpha is
    dropped for jpg; the returned notes say so.
    """
    notes = []
    if dtype == np.uint16 and ext not in SIXTEEN_BIT_EXTENSIONS:
        dtype = np.uint8
        alpha = None if alpha is None else (alpha.astype(np.float32) / 257).round().astype(np.uint8)
        notes.append(f'{ext} stores 8 bits per sample: written as 8-bit')
    if alpha is not None and ext in NO_ALPHA_EXTENSIONS:
        alpha = None
        notes.append(f'{ext} has no alpha channel: alpha dropped')
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if gray else bgr
    img = (np.clip(img, 0, 1) * np.iinfo(dtype).max).round().astype(dtype)
    if alpha is not None:
        img = np.dstack([img, alpha])
    return img, notes


def write_image(path, img):
    """Write ``img`` in the format of ``path``'s extension (folders are created; any path characters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {img.dtype} image with {img.shape[2:] or (1,)} channels '
                         f'as {path.suffix}')
    buf.tofile(str(path))


# ----------------------------------------------------------------------------- running

def pick_device(name):
    """``torch.device`` for ``--device`` auto|cpu|cuda."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError('--device cuda: no CUDA device is available (use --device cpu)')
    return torch.device(name)


class Deraining:
    """Derains one image at a time with a fixed model, device, precision and tiling policy.

    Args:
        model (nn.Module): the network, any image-to-image model.
        device (torch.device): where it runs.
        precision (str): fp32, fp16 or bf16 (:func:`dsmnet_arch.precision.inference_autocast`).
        tile (int | str | None): tile side, ``'auto'`` (from the free memory) or ``None`` (whole image).
        overlap (int): least overlap of neighbouring tiles.
        batch_size (int): tiles per forward pass.
        multiple (int): the model pads its input to a multiple of this (see :func:`tiled_forward`).
        compile (bool): run the forward passes through ``torch.compile`` (static shapes: the first pass of
            each new input shape compiles). The memory probe of ``'auto'`` runs the model eagerly.
    """

    def __init__(self, model, device, precision='fp32', tile='auto', overlap=DEFAULT_OVERLAP, batch_size=1,
                 multiple=1, compile=False):
        self.model = model.to(device)
        self.forward = torch.compile(self.model, **COMPILE_DEFAULTS) if compile else self.model
        self.device = device
        self.autocast = inference_autocast(device, precision)
        self.tile, self.overlap, self.batch_size, self.multiple = tile, overlap, batch_size, multiple
        self._bytes_per_pixel = None

    def tile_for(self, height, width, images=1):
        """The tile side for ``images`` images of ``height x width`` (``None``: each in one piece)."""
        if self.tile != 'auto':
            return self.tile
        with self.autocast:
            if self._bytes_per_pixel is None:
                self._bytes_per_pixel = activation_bytes_per_pixel(self.model, device=self.device)
            # up to batch_size whole images share a forward pass: the whole-image test is for all of them
            stacked = min(images, self.batch_size) * height
            return auto_tile(self._bytes_per_pixel, stacked, width, MEMORY_SHARE * free_memory(self.device),
                             self.batch_size, self.overlap)

    def __call__(self, bgr, bar=None):
        """Derain a float BGR ``H x W x 3`` image; a tqdm ``bar`` is reset to the number of tiles
        and advanced as they finish."""
        return self.run([bgr], bar)[0]

    def run(self, images, bar=None):
        """Derain a list of float BGR images of one size (video frames) in one tiled pass: their tiles
        share the batches of ``batch_size``. A tqdm-like ``bar`` is reset to the number of tiles."""
        height, width = images[0].shape[:2]
        tile = self.tile_for(height, width, len(images))
        if bar is not None:
            bar.reset(total=len(images) * count_tiles(height, width, tile, self.overlap, self.multiple))
        tensor = torch.cat([img2tensor(bgr, bgr2rgb=True, float32=True)[None] for bgr in images])
        with self.autocast:
            out = tiled_forward(self.forward, tensor, tile, self.overlap, self.batch_size, self.multiple, self.device,
                                bar.update if bar is not None else None)
        return [tensor2img(one, rgb2bgr=True, out_type=np.float32) for one in out]


#: What :func:`derain_file` (and :func:`dsmnet_arch.video.derain_video`) return: the pixels processed, notes to
#: report (format limits met on writing), and for photos the rainy input and the result as written to the
#: file (input layout and depth; ``None`` for videos).
Derained = namedtuple('Derained', 'pixels notes rainy derained')


def derain_file(derain, src, dst, cmp=None, tile_bar=None, max_pixels=None):
    """Derain the photo ``src`` into ``dst`` (and an input | output image into ``cmp``): the one path
    of a photo on the command line and on the web page. Returns a :data:`Derained`. Raises
    ``ValueError`` (unreadable, too large: see :func:`read_image`) or another of :data:`FILE_ERRORS`.
    """
    bgr, alpha, gray, dtype = read_image(src, max_pixels)
    out = derain(bgr, tile_bar)
    ext = dst.suffix.lower()
    img, notes = to_file_image(out, alpha, gray, dtype, ext)
    write_image(dst, img)
    before, _ = to_file_image(bgr, alpha, gray, dtype, ext)
    if cmp is not None:
        write_image(cmp, np.concatenate([before, img], axis=1))
    return Derained(bgr.shape[0] * bgr.shape[1], notes, before, img)


def tile_overlap(tile, overlap, multiple):
    """The tile overlap for ``--tile`` and ``--tile-overlap`` (``None``: not given) with a model that
    pads to ``multiple``. Without ``--tile-overlap`` a tile too small for the default overlap gets
    the largest that fits, and says so; an explicit overlap that does not fit is a ``ValueError``."""
    if not isinstance(tile, int):  # whole image or 'auto' (which fits the tile to the overlap)
        return DEFAULT_OVERLAP if overlap is None else overlap
    room = tile - (multiple - 1)  # tiles shrink by up to multiple - 1 to match the padding
    if overlap is None:
        overlap = min(DEFAULT_OVERLAP, max(0, (room - 1) // 2))
        if overlap < DEFAULT_OVERLAP:
            print(f'dsmnet-derain: --tile {tile} leaves room for a tile overlap of {overlap} pixels, not the default '
                  f'{DEFAULT_OVERLAP}: using {overlap} (--tile-overlap sets it)', file=sys.stderr)
    if room <= 2 * overlap:
        raise ValueError(f'--tile {tile} must exceed twice --tile-overlap ({overlap}) by at least {multiple - 1} '
                         'for this DSMNet')
    return overlap


def tile_arg(value):
    """``--tile``: 'auto', 0 (whole image) or a side in pixels."""
    if value == 'auto':
        return value
    try:
        side = int(value)
    except ValueError:
        side = -1
    if side < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a tile side in pixels, got {value!r}")
    return side or None


def ext_arg(value):
    ext = '.' + value.lower().lstrip('.')
    if ext not in IMAGE_EXTENSIONS:
        raise argparse.ArgumentTypeError(f'unsupported output format {value!r}; one of {", ".join(IMAGE_EXTENSIONS)}')
    return ext


def pixels_arg(value):
    """``--max-pixels``: a pixel count, e.g. 50000000 or 50e6."""
    try:
        pixels = int(float(value))
    except ValueError:
        pixels = 0
    if pixels < 1:
        raise argparse.ArgumentTypeError(f'expected a number of pixels, e.g. 50e6, got {value!r}')
    return pixels


#: ``--max-pixels`` of the web page when not given (the command line has no limit unless given).
SERVE_MAX_PIXELS = 50_000_000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='dsmnet-derain',
                                     description='Derain photos and videos with trained DSM-Net weights, on the '
                                     'command line or on a local web page (--serve).')
    parser.add_argument('-i', '--input', help='image or video file, folder or glob pattern (quote it)')
    parser.add_argument('-o', '--output', help='output folder (never one of the inputs)')
    parser.add_argument('--weights',
                        help="BasicSR net_g_*.pth ('params_ema' preferred over 'params') or a bare state dict")
    parser.add_argument('--opt', help='training options file whose network_g gives the DSMNet arguments '
                        '(default: those the checkpoint records, else read off the weights)')
    parser.add_argument('--recursive', action='store_true', help='also take images in subfolders of a folder INPUT')
    parser.add_argument('--ext', type=ext_arg, help='output format of images, e.g. png (default: the input\'s)')
    parser.add_argument('--tile', type=tile_arg, default='auto',
                        help="tile side in pixels, 0 for the whole image, or 'auto' (default): the whole image if "
                        'it fits in half the free memory, else the largest tile that does')
    parser.add_argument('--tile-overlap', type=int,
                        help=f'least overlap of neighbouring tiles in pixels (default {DEFAULT_OVERLAP}, or as much '
                        'as a smaller --tile leaves room for)')
    parser.add_argument('--batch', type=int, help='tiles (or video frames) per forward pass (default: 4 on a GPU, '
                        '1 on the CPU)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    parser.add_argument('--precision', choices=('auto', ) + PRECISIONS, default='auto', help='auto (default): bf16 '
                        'on CPUs with native bfloat16 (AMX, AVX-512 BF16), else fp32; fp16 needs a GPU')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the network: each new image (or tile) size compiles first, which takes '
                        'minutes on a CPU, where it also ran slower than without (docs/benchmarks.md)')
    parser.add_argument('--compare', action='store_true',
                        help='also write input | derained to OUTDIR/compare/ (videos too)')
    parser.add_argument('--max-pixels', type=pixels_arg,
                        help=f'refuse images of more pixels, e.g. 50e6 (default: no limit; with --serve '
                        f'{SERVE_MAX_PIXELS:.0e})')
    web = parser.add_argument_group('web page (pip install "dsmnet_arch[web]")')
    web.add_argument('--serve', action='store_true',
                     help='start a local web page to derain photos instead of reading -i/-o')
    web.add_argument('--host', default='127.0.0.1',
                     help='address the page listens on (default 127.0.0.1: this machine only; 0.0.0.0: every '
                     'network interface)')
    web.add_argument('--port', type=int, default=7860, help='port of the page (default 7860)')
    args = parser.parse_args(argv)
    if not args.serve and (args.input is None or args.output is None):
        parser.error('-i/--input and -o/--output are required (or --serve for the web page)')
    if args.serve and (args.input is not None or args.output is not None):
        parser.error('--serve takes no -i/-o: photos are uploaded on the page')
    if args.tile_overlap is not None and args.tile_overlap < 0:
        parser.error(f'--tile-overlap must be >= 0, got {args.tile_overlap}')
    if args.batch is not None and args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if args.serve and args.max_pixels is None:
        args.max_pixels = SERVE_MAX_PIXELS
    return args


def setup_deraining(args):
    """The :class:`Deraining` of parsed arguments (weights, options, device, precision, tiling, batch,
    compile), the same for the command line, videos and the web page. Raises ``ValueError``,
    ``FileNotFoundError`` or ``MemoryError`` with one line to show."""
    weights = weights_or_bundled(args.weights)
    device = pick_device(args.device)
    precision = auto_precision(device) if args.precision == 'auto' else args.precision
    batch = args.batch or (4 if device.type == 'cuda' else 1)
    model = build_model(weights, args.opt)
    multiple = model.pad_multiple  # tiles shrink by up to multiple - 1 to match DSMNet's padding
    overlap = tile_overlap(args.tile, args.tile_overlap, multiple)
    return Deraining(model, device, precision, args.tile, overlap, batch, multiple, args.compile)


def main(argv=None):
    """Command line entry point; returns the exit status (0 all done, 1 some files failed, 2 bad setup)."""
    args = parse_args(argv)
    keep_freed_memory()
    if args.serve:
        from dsmnet_arch.web import serve
        return serve(args)
    try:
        plan = plan_outputs(find_images(args.input, args.recursive), args.output, args.ext, args.compare)
        derain = setup_deraining(args)
    except (ValueError, FileNotFoundError, MemoryError) as err:
        print(f'dsmnet-derain: error: {err}', file=sys.stderr)
        return 2

    failed, megapixels, start = [], 0.0, time.perf_counter()
    with tqdm(plan, desc='files', unit='file', disable=None) as file_bar, \
            tqdm(desc='tiles', unit='tile', leave=False, disable=None) as tile_bar:
        for src, dst, cmp in file_bar:
            try:
                if is_video(src):
                    done = derain_video(derain, src, dst, cmp)
                else:
                    done = derain_file(derain, src, dst, cmp, tile_bar, args.max_pixels)
            except FILE_ERRORS as err:
                failed.append(src)
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                tqdm.write(f'Skipped {src}: {reason}', file=sys.stderr)
                continue
            for note in done.notes:
                tqdm.write(f'{dst}: {note}', file=sys.stderr)
            megapixels += done.pixels / 1e6
    seconds = time.perf_counter() - start
    done = len(plan) - len(failed)
    rate = f'{seconds / megapixels:.2f} s/MP' if megapixels else 'n/a s/MP'
    print(f'Derained {done} file(s), {len(failed)} failed, {megapixels:.3g} MP in {seconds:.1f} s ({rate}) '
          f'-> {args.output}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
