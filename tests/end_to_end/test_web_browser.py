"""The web page of ``dsmnet-derain --serve``, end to end in a real headless Chromium driven by Playwright.

Needs Debian's chromium (``apt-get install chromium``; no browser is downloaded) and the ``web`` extra
(Gradio) with Playwright. Skipped with the reason where they are missing, unless
DSMNET_BROWSER_TEST=required (set by CI), which turns the skip into a failure. The screenshot in the
README comes from here too: DSMNET_SCREENSHOT=docs/images/web_page.jpg DSMNET_SCREENSHOT_WEIGHTS=W.pth
DSMNET_SCREENSHOT_PHOTO=P.png pytest tests/end_to_end/test_web_browser.py -k screenshot. The page's handler
without a browser: tests/test_web.py.
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
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import REPO, rainy_image

pytestmark = pytest.mark.slow  # a server process and a browser

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
