"""Refusal paths of the options checker and the dataset preparation: LMDBs whose keys do not pair,
folders left by interrupted preparations, and damaged records of earlier ones."""
import os

import pytest

from dsmnet_arch import preparation
from dsmnet_arch.checks import OptionsError, check_options

from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from conftest import train_options
from test_prepare_rain_datasets import make_rain100


def lmdb_options(tmp_path, toy_data, target_keys=None):
    """Training options reading LMDBs of the toy pairs; ``target_keys`` renames the target side's keys."""
    for side in ('input', 'target'):
        folder = os.path.join(toy_data, 'train', side)
        names = sorted(os.listdir(folder))
        keys = [os.path.splitext(n)[0] for n in names]
        if side == 'target' and target_keys:
            keys = target_keys(keys)
        make_lmdb_from_imgs(folder, str(tmp_path / f'{side}.lmdb'), names, keys)
    opt = train_options(toy_data)
    opt['datasets']['train'].update(dataroot_lq=str(tmp_path / 'input.lmdb'), dataroot_gt=str(tmp_path / 'target.lmdb'),
                                    io_backend={'type': 'lmdb'})
    return opt


def test_lmdbs_whose_keys_do_not_pair_are_named(tmp_path, toy_data):
    (tmp_path / 'good').mkdir()
    check_options(lmdb_options(tmp_path / 'good', toy_data))  # the same LMDBs with matching keys pass
    opt = lmdb_options(tmp_path, toy_data, target_keys=lambda keys: keys[:-1] + ['renamed'])
    with pytest.raises(OptionsError) as err:
        check_options(opt)
    message = str(err.value)
    assert message == (f"Option datasets:train: 1 target(s) have no input (filename_tmpl '{{}}'), e.g. "
                       f"{tmp_path / 'target.lmdb' / 'renamed.png'} has no {tmp_path / 'input.lmdb' / 'renamed.png'}")


def test_a_malformed_lmdb_key_list_is_named_by_line(tmp_path, toy_data):
    opt = lmdb_options(tmp_path, toy_data)
    meta = tmp_path / 'input.lmdb' / 'meta_info.txt'
    lines = meta.read_text().splitlines()
    meta.write_text('\n'.join(lines[:1] + ['img001.png 32x32 no shape'] + lines[2:]) + '\n')
    with pytest.raises(OptionsError, match=f'{meta}:2: expected "name \\(h,w,c\\) level", got \'img001.png 32x32'):
        check_options(opt)


def test_folders_left_by_an_interrupted_run_are_reported_and_kept(tmp_path):
    sources = preparation.resolve_sources('Rain100H', src=make_rain100(tmp_path / 'src'))
    leftover = tmp_path / 'out' / '.train.incomplete-x1'
    (leftover / 'input').mkdir(parents=True)
    report = preparation.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    train = report.splits[0]
    assert train.status == 'written'
    assert any(f'1 folder(s) left by an interrupted run, safe to delete: {leftover}' in w for w in train.warnings)
    assert leftover.is_dir()  # not ours to delete: the report says so
    assert str(leftover) in str(report)


@pytest.mark.parametrize('record', ['{"dataset": "Rain100H", "pairs": ', '[1, 2]', '{"dataset": "Rain100H"}'],
                         ids=['truncated', 'not a record', 'missing fields'])
def test_a_damaged_record_of_an_earlier_preparation_is_named(tmp_path, record):
    sources = preparation.resolve_sources('Rain100H', src=make_rain100(tmp_path / 'src'))
    preparation.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    marker = tmp_path / 'out' / 'train' / 'prepared.json'
    marker.write_text(record)
    with pytest.raises(preparation.PreparationError, match=f'Cannot read {marker}: ') as err:
        preparation.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    assert len(str(err.value).splitlines()) == 1
    assert marker.read_text() == record  # left as it was
