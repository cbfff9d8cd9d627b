"""dsmnet_arch.web without a browser: the page's handler derains uploads through the command line's path.

The page itself, in a real Chromium: tests/end_to_end/test_web_browser.py.
"""
import os

import cv2
import numpy as np
import torch

import dsmnet_arch.infer as infer
import dsmnet_arch.web as web
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import rainy_image


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
    infer.main(['-i', str(tmp_path / 'g.tif'), '-o', str(tmp_path / 'cli'), '--weights', _save(tmp_path, model),
                '--precision', 'fp32'])  # as the page's Deraining above
    np.testing.assert_array_equal(out, cv2.imread(str(tmp_path / 'cli' / 'g.tif'), cv2.IMREAD_UNCHANGED))
    rainy, derained = (cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in pairs['g.tif'])
    assert rainy.dtype == np.uint8 and rainy.shape == gray16.shape and derained.shape == gray16.shape
    assert seen[-1] == (0.5, 'g.tif: photo 1 of 2, tile 1 of 1')


def _save(tmp_path, model):
    path = tmp_path / 'w.pth'
    torch.save({'params': model.state_dict()}, path)
    return str(path)
