"""Refusal paths of the dataset preparation: folders left by interrupted preparations, and damaged records of
earlier ones (the options checker's refusals of LMDBs: tests/test_checks.py)."""

import pytest

from dsmnet_arch import preparation

from test_prepare_rain_datasets import make_rain100


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
