"""scripts/compare_grid.py: the comparison sheet, each rainy photo beside its derained results."""
import cv2
import numpy as np

from conftest import load_script


def flat(value, h, w):
    return np.full((h, w, 3), value, np.uint8)


def test_comparison_sheet_puts_each_photo_beside_its_results(tmp_path, capsys):
    grid = load_script('compare_grid')
    sizes = {'1': (40, 80), '1_2': (80, 80), 'b': (60, 30)}  # '1_2' must not take the result of '1'
    for folder in ('rainy', 'derain', 'basicsr'):
        (tmp_path / folder).mkdir()
    for k, (stem, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(tmp_path / 'rainy' / f'{stem}.jpg'), flat(10 + k, h, w))
        cv2.imwrite(str(tmp_path / 'derain' / f'{stem}.png'), flat(100 + k, h, w))  # dsmnet-derain: the same name
        cv2.imwrite(str(tmp_path / 'basicsr' / f'{stem}_test_x.png'), flat(200 + k, h, w))  # BasicSR: <name>_<run>
    out = tmp_path / 'sheet' / 'grid.png'
    assert grid.main(['-o', str(out), '--rainy', str(tmp_path / 'rainy'), '--width', '40',
                      '--column', f'DSM-Net={tmp_path / "derain"}', '--column', f'BasicSR={tmp_path / "basicsr"}']) == 0
    sheet = cv2.imread(str(out))
    heights = [20, 40, 80]  # rows of '1', '1_2', 'b' (sorted) at width 40
    assert sheet.shape == (grid.LABEL_HEIGHT + sum(h + grid.GAP for h in heights), 3 * 40 + 2 * grid.GAP, 3)
    top = grid.LABEL_HEIGHT + grid.GAP
    for k, height in enumerate(heights):
        for column, base in enumerate((10, 100, 200)):
            cell = sheet[top:top + height, column * (40 + grid.GAP):column * (40 + grid.GAP) + 40]
            assert (cell == base + k).all(), (k, column)
        top += height + grid.GAP
    assert f'{out}: 128x184, 3 columns' in capsys.readouterr().out

    (tmp_path / 'basicsr' / 'b_test_x.png').unlink()
    assert grid.main(['-o', str(out), '--rainy', str(tmp_path / 'rainy'), '--column', f'B={tmp_path / "basicsr"}']) == 1
    assert capsys.readouterr().err.strip() == f'error: B: no result for b in {tmp_path / "basicsr"}'
