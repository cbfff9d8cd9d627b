"""The web page of ``dsmnet-derain --serve``, end to end in a real headless Chromium driven by Playwright.

Needs Debian's chromium (``apt-get install chromium``; no browser is downloaded) and the ``web`` extra
(Gradio) with Playwright. Skipped with the reason where they are missing, unless
DSMNET_BROWSER_TEST=required (set by CI), which turns the skip into a failure. The screenshot in the
README comes from here too: DSMNET_SCREENSHOT=docs/images/web_page.jpg DSMNET_SCREENSHOT_WEIGHTS=W.pth
DSMNET_SCREENSHOT_PHOTO=P.png pytest tests/test_web.py -k screenshot.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
import torch

import dsmnet_arch.infer as infer
import dsmnet_arch.web as web
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import REPO

REQUIRED = os.environ.get('DSMNET_BROWSER_TEST') == 'required'
CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']


def need(ok, reason):
    if not ok:
        if REQUIRED:
            pytest.fail(f'{reason} (DSMNET_BROWSER_TEST=required)')
        pytest.skip(reason)


def chromium_path():
    return os.environ.get('DSMNET_CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')


def module_available(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def rainy_image(height=72, width=96, seed=0):
    """uint8 BGR: smooth colour planes with thin bright diagonal streaks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.3 * np.sin(xx / rng.uniform(3, 9) + yy / rng.uniform(4, 11) + c) for c in range(3)]
    img = np.stack(planes, -1) + 0.35 * (((xx + 3 * yy).astype(int) % 11) == 0)[..., None]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start_server(weights, tmp_path, *extra):
    """``dsmnet-derain --serve`` in a process of its own; returns (process, url) once the page answers."""
    port = free_port()
    url = f'http://127.0.0.1:{port}/'
    log = open(tmp_path / 'server.log', 'w')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
    proc = subprocess.Popen([sys.executable, '-m', 'dsmnet_arch.infer', '--serve', '--weights', str(weights),
                             '--port', str(port), *extra], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f'the server did not start: {(tmp_path / "server.log").read_text()[-2000:]}')
        time.sleep(0.5)
    return proc, url


@pytest.fixture
def browser():
    need(module_available('gradio'), 'Gradio is not installed (pip install "dsmnet_arch[web]")')
    need(module_available('playwright'), 'Playwright is not installed (pip install playwright)')
    path = chromium_path()
    need(path is not None, 'no Chromium installed (apt-get install chromium; nothing is downloaded at run time)')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def upload_and_wait(page, paths, expected):
    """Upload ``paths`` on the page and wait until the status line starts with ``expected``; returns the status."""
    page.set_input_files('#uploads input[type=file]', [str(p) for p in paths])
    status = page.locator('#status')
    status.filter(has_text=expected).wait_for(timeout=60_000)
    return status.inner_text()


def test_the_page_derains_like_the_command_line_and_names_bad_uploads(tmp_path, browser):
    torch.manual_seed(0)
    weights = tmp_path / 'net_g_latest.pth'
    torch.save({'params': DSMNet(num_feat=8, num_levels=2, num_subspaces=4).state_dict()}, weights)
    photos = tmp_path / 'photos'
    photos.mkdir()
    cv2.imwrite(str(photos / 'street.png'), rainy_image())
    (photos / 'notes.txt').write_text('not a photo\n')
    data = (photos / 'street.png').read_bytes()
    (photos / 'cut.png').write_bytes(data[:len(data) // 2])  # a truncated PNG
    cv2.imwrite(str(photos / 'big.png'), rainy_image(150, 200, seed=1))  # 30,000 pixels
    # the command line's result for the same photo, with the same weights
    assert infer.main(['-i', str(photos / 'street.png'), '-o', str(tmp_path / 'cli'), '--weights', str(weights)]) == 0
    cli = cv2.imread(str(tmp_path / 'cli' / 'street.png'), cv2.IMREAD_UNCHANGED)

    server, url = start_server(weights, tmp_path, '--max-pixels', '20000')
    try:
        page = browser.new_page(accept_downloads=True)
        page.goto(url)
        status = upload_and_wait(page, [photos / 'street.png'], 'Derained 1 of 1')
        assert 'Not derained' not in status
        page.locator('#slider img').nth(1).wait_for()  # rainy and derained on the slider
        assert page.locator('#slider img').count() == 2
        with page.expect_download() as download:
            page.locator('#downloads a[download="street.png"]').click()
        assert download.value.suggested_filename == 'street.png'
        download.value.save_as(tmp_path / 'page.png')
        got = cv2.imread(str(tmp_path / 'page.png'), cv2.IMREAD_UNCHANGED)
        assert got.shape == cli.shape and got.dtype == cli.dtype
        assert np.abs(got.astype(int) - cli.astype(int)).max() <= 1
        assert np.abs(got.astype(int) - cv2.imread(str(photos / 'street.png')).astype(int)).max() > 10  # derained

        page.goto(url)  # a fresh page: three bad uploads at once
        status = upload_and_wait(page, [photos / 'notes.txt', photos / 'cut.png', photos / 'big.png'],
                                 'Derained 0 of 3')
        lines = status.splitlines()
        assert 'notes.txt: not a readable image (corrupt, empty or of an unknown format)' in lines
        assert 'cut.png: not a readable image (corrupt, empty or of an unknown format)' in lines
        assert 'big.png: 30,000 pixels, more than the limit of 20,000 (--max-pixels)' in lines
        assert 'Traceback' not in page.content()

        assert answers(url) and server.poll() is None  # still serving, and still deraining
        page.goto(url)
        upload_and_wait(page, [photos / 'street.png'], 'Derained 1 of 1')
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert 'Traceback' not in (tmp_path / 'server.log').read_text()


@pytest.mark.skipif(not os.environ.get('DSMNET_SCREENSHOT'), reason='makes the README picture: DSMNET_SCREENSHOT=PATH')
def test_screenshot(tmp_path, browser):
    """The README's picture of the page: one photo derained with the given weights, 1280 pixels wide."""
    server, url = start_server(os.environ['DSMNET_SCREENSHOT_WEIGHTS'], tmp_path)
    try:
        page = browser.new_page(viewport={'width': 1280, 'height': 900})
        page.goto(url)
        upload_and_wait(page, [os.environ['DSMNET_SCREENSHOT_PHOTO']], 'Derained 1 of 1')
        page.locator('#slider img').nth(1).wait_for()
        time.sleep(1)
        shot = os.environ['DSMNET_SCREENSHOT']
        jpeg = shot.lower().endswith(('.jpg', '.jpeg'))
        page.screenshot(path=shot, full_page=True, **({'type': 'jpeg', 'quality': 88} if jpeg else {}))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_uploads_are_derained_through_the_command_lines_path(tmp_path):
    """derain_uploads (the page's handler) without a browser: results, previews and failures."""
    torch.manual_seed(0)
    model = DSMNet(num_feat=8, num_levels=2, num_subspaces=4).eval()
    derain = infer.Deraining(model, torch.device('cpu'), tile=None, multiple=model.pad_multiple)
    gray16 = (rainy_image()[..., 0].astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / 'g.tif'), gray16)
    (tmp_path / 'x.jpg').write_bytes(b'\xff\xd8\xff')
    seen = []

    class Progress:
        def __call__(self, fraction, desc=None):
            seen.append((fraction, desc))

    status, pairs, results = web.derain_uploads(derain, [tmp_path / 'g.tif', tmp_path / 'x.jpg'], tmp_path / 'work',
                                                progress=Progress())
    assert status.startswith('Derained 1 of 2 file(s)') and '- **x.jpg**: not a readable image' in status
    assert [os.path.basename(r) for r in results] == ['g.tif'] and list(pairs) == ['g.tif']
    out = cv2.imread(results[0], cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == gray16.shape  # the input's format, as on the command line
    infer.main(['-i', str(tmp_path / 'g.tif'), '-o', str(tmp_path / 'cli'), '--weights', _save(tmp_path, model)])
    np.testing.assert_array_equal(out, cv2.imread(str(tmp_path / 'cli' / 'g.tif'), cv2.IMREAD_UNCHANGED))
    rainy, derained = (cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in pairs['g.tif'])
    assert rainy.dtype == np.uint8 and rainy.shape == gray16.shape and derained.shape == gray16.shape
    assert seen[-1] == (0.5, 'g.tif: photo 1 of 2, tile 1 of 1')


def _save(tmp_path, model):
    path = tmp_path / 'w.pth'
    torch.save({'params': model.state_dict()}, path)
    return str(path)
