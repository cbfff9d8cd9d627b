"""Real rain without clean images: RealRainModel through dsmnet_arch/test.py in a subprocess, NIQE of input and
output (photos and options: conftest.write_photos, conftest.real_rain_options)."""
import os
import re

import cv2
import numpy as np
import pytest

from basicsr.metrics import calculate_niqe

from conftest import REPO, real_rain_options, run_entry, write_photos, write_yaml

pytestmark = pytest.mark.slow  # a BasicSR pipeline in a subprocess


def test_test_py_derains_a_folder_of_rainy_photos_and_logs_niqe_of_input_and_output(tmp_path):
    photos = write_photos(tmp_path / 'photos', [(96, 192), (192, 96), (192, 192)])
    yml = write_yaml(tmp_path / 'real.yml', real_rain_options(tmp_path, photos))
    proc = run_entry([os.path.join(REPO, 'dsmnet_arch', 'test.py'), '-opt', yml], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    derained = tmp_path / 'results' / 'real' / 'visualization' / 'photos'
    assert sorted(os.listdir(derained)) == [f'photo{i}_real.png' for i in range(3)]
    for i in range(3):  # the derained photo keeps the photo's size
        assert cv2.imread(str(derained / f'photo{i}_real.png')).shape == cv2.imread(str(photos / f'photo{i}.png')).shape
    log = open(next((tmp_path / 'results' / 'real').glob('test_real_*.log'))).read()
    scores = dict(re.findall(r'\t # (niqe\w*): (\d+\.\d+)', log))
    niqe_input = [calculate_niqe(cv2.imread(str(photos / f'photo{i}.png')), 0) for i in range(3)]
    niqe_output = [calculate_niqe(cv2.imread(str(derained / f'photo{i}_real.png')), 0) for i in range(3)]
    assert float(scores['niqe_input']) == pytest.approx(np.mean(niqe_input), abs=1e-4)
    assert float(scores['niqe']) == pytest.approx(np.mean(niqe_output), abs=1e-4)
    assert niqe_input != pytest.approx(niqe_output, abs=1e-3)  # two different images were scored
    rows = (tmp_path / 'results' / 'real' / 'visualization' / 'photos_scores.csv').read_text().splitlines()
    assert rows[0] == 'image,niqe_input,niqe' and [r.split(',')[0] for r in rows[1:]] == ['photo0', 'photo1', 'photo2']
