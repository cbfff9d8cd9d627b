"""A local web page to derain photos: ``dsmnet-derain --serve --weights W.pth`` (Gradio).

Drop one or more photos on the page: each goes through :func:`dsmnet_arch.infer.derain_file`, the
command line's own path (same reading, tiling, precision and writing), with the progress of its
tiles shown on the page. The page shows rainy and derained on a before/after slider (a choice of
photo when there are several) and offers the results for download, in each input's name and
format (bit depth, gray, alpha kept as the command line keeps them). A file that is not an image,
is truncated, or has more pixels than ``--max-pixels`` is named with the reason on the page; the
server goes on serving. Needs ``pip install "dsmnet_arch[web]"``. See docs/inference.md.
"""
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

from dsmnet_arch.infer import FILE_ERRORS, derain_file, setup_deraining

#: Longest side of the images shown on the slider (the downloads keep the full size).
PREVIEW_SIDE = 1600
#: Result folders older than this (seconds) are removed when a new upload comes in.
KEEP_RESULTS_S = 3600


def import_gradio():
    """Gradio, or a one-line ``ValueError`` saying how to install it. Usage statistics are off (the page is
    local and sends nothing anywhere)."""
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')
    try:
        import gradio
    except ImportError:
        raise ValueError('the web page needs Gradio: pip install "dsmnet_arch[web]"') from None
    return gradio


def preview(img, path, max_side=PREVIEW_SIDE):
    """Write an 8-bit PNG of a file-layout image (gray, BGR or BGRA; 8 or 16 bit) for the slider, at most
    ``max_side`` pixels on its longest side; returns the path as a string."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257).round().astype(np.uint8)
    scale = max_side / max(img.shape[:2])
    if scale < 1:
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), img):
        raise ValueError(f'cannot write the preview {path}')
    return str(path)


class PageProgress:
    """A tqdm-like bar (``reset(total)``, ``update(n)``) that shows the tiles of photo ``index`` of ``count`` on
    the page through a ``gradio.Progress``."""

    def __init__(self, progress, index, count, name):
        self.progress, self.index, self.count, self.name = progress, index, count, name
        self.total, self.n = 1, 0

    def reset(self, total=None):
        self.total, self.n = max(1, total or 1), 0
        self._show()

    def update(self, n=1):
        self.n += n
        self._show()

    def _show(self):
        photo = f'photo {self.index + 1} of {self.count}, ' if self.count > 1 else ''
        self.progress((self.index + self.n / self.total) / self.count,
                      desc=f'{self.name}: {photo}tile {self.n} of {self.total}')


def remove_old(folder, age_s=KEEP_RESULTS_S):
    """Remove the subfolders of ``folder`` last changed more than ``age_s`` seconds ago."""
    now = time.time()
    for child in folder.iterdir():
        if child.is_dir() and now - child.stat().st_mtime > age_s:
            shutil.rmtree(child, ignore_errors=True)


def derain_uploads(derain, paths, workdir, max_pixels=None, progress=None):
    """Derain uploaded files: what the page's upload event runs.

    Returns ``(status, pairs, results)``: a Markdown status (what was done, and every file that failed
    with its reason), ``{shown name: (rainy preview, derained preview)}`` and the paths of the results
    to download (each in its own folder, under the upload's file name).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    remove_old(workdir)
    request = Path(tempfile.mkdtemp(dir=workdir))
    pairs, results, failures, notes = {}, [], [], []
    start, pixels = time.perf_counter(), 0
    for index, path in enumerate(paths):
        src = Path(path)
        name = src.name
        folder = request / str(index)
        bar = PageProgress(progress, index, len(paths), name) if progress is not None else None
        try:
            done = derain_file(derain, src, folder / name, None, bar, max_pixels)
            shown = name if name not in pairs else f'{name} ({index + 1})'
            pairs[shown] = (preview(done.rainy, folder / 'rainy.png'), preview(done.derained, folder / 'derained.png'))
        except FILE_ERRORS as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            failures.append(f'- **{name}**: {reason}')
            continue
        except Exception as err:  # a bug: logged in full on the server, one line on the page
            traceback.print_exc()
            failures.append(f'- **{name}**: internal error ({type(err).__name__}); details in the server log')
            continue
        results.append(str(folder / name))
        notes += [f'- {name}: {note}' for note in done.notes]
        pixels += done.pixels
    seconds = time.perf_counter() - start
    lines = [f'Derained {len(results)} of {len(paths)} file(s), {pixels / 1e6:.2f} MP in {seconds:.1f} s.']
    if failures:
        lines += ['', 'Not derained:'] + failures
    if notes:
        lines += ['', 'Notes:'] + notes
    return '\n'.join(lines), pairs, results


def build_app(derain, max_pixels=None, weights='', workdir=None):
    """The Gradio page (``gradio.Blocks``) around a :class:`dsmnet_arch.infer.Deraining`."""
    gr = import_gradio()
    workdir = Path(workdir or tempfile.mkdtemp(prefix='dsmnet-web-'))
    limit = f'; at most {max_pixels / 1e6:.1f} megapixels' if max_pixels else ''

    def on_upload(paths, progress=gr.Progress()):
        if not paths:
            return 'No file uploaded.', None, gr.update(choices=[], value=None), None, {}
        status, pairs, results = derain_uploads(derain, paths, workdir, max_pixels, progress)
        first = next(iter(pairs), None)
        return (status, pairs[first] if first else None, gr.update(choices=list(pairs), value=first),
                results or None, pairs)

    def on_pick(shown, pairs):
        return pairs.get(shown) if shown else None

    with gr.Blocks(title='DSM-Net deraining', analytics_enabled=False) as app:
        gr.Markdown(f'## DSM-Net deraining\nDrop rainy photos (png, jpg, bmp, tif, webp{limit}). '
                    f'Weights: `{weights}`.')
        uploads = gr.File(label='Rainy photos', file_count='multiple', elem_id='uploads')
        status = gr.Markdown(elem_id='status')
        with gr.Row():
            pick = gr.Dropdown(label='Photo shown', choices=[], elem_id='pick', scale=1)
        slider = gr.ImageSlider(label='Rainy | derained', type='filepath', image_mode=None, format='png',
                                interactive=False, elem_id='slider')
        downloads = gr.File(label='Derained, in the input\'s format', file_count='multiple', interactive=False,
                            elem_id='downloads')
        pairs = gr.State({})
        uploads.upload(on_upload, [uploads], [status, slider, pick, downloads, pairs])
        pick.input(on_pick, [pick, pairs], [slider])
    return app


#: The page's look: Gradio's default with the system's fonts (its default fetches web fonts from the internet).
def _theme(gr):
    return gr.themes.Default(font=['ui-sans-serif', 'system-ui', 'sans-serif'],
                             font_mono=['ui-monospace', 'monospace'])


def serve(args):
    """``dsmnet-derain --serve``: build the page from the parsed arguments and serve it until interrupted.
    Returns the exit status (2: bad setup)."""
    try:
        gr = import_gradio()
        derain = setup_deraining(args)
    except (ValueError, FileNotFoundError, MemoryError) as err:
        print(f'dsmnet-derain: error: {err}', file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix='dsmnet-web-')
    try:
        app = build_app(derain, args.max_pixels, Path(args.weights).name if args.weights else 'bundled', workdir)
        print(f'dsmnet-derain: serving the page on http://{args.host}:{args.port} (Ctrl+C stops)', flush=True)
        app.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
            ssr_mode=False, footer_links=[], theme=_theme(gr), quiet=True)
    except OSError as err:  # e.g. the port is taken
        print(f'dsmnet-derain: error: cannot serve on {args.host}:{args.port}: {err}', file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
