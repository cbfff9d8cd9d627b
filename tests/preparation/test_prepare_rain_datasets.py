"""Preparation of the paper's deraining sets (dsmnet_arch.preparation, scripts/prepare_rain_datasets.py): native
layouts in, BasicSR's paired layout out; problems, interrupted runs and damaged records refused by name.

Every generated image is flat, with a grey level that says which pair and which side it is
(rainy = 150 + 5 i, clean = 20 + 5 i), so reading the result through BasicSR's own
PairedImageDataset shows that the right image landed on the right side under the right name.
"""
import os
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from dsmnet_arch import preparation
from dsmnet_arch import preparation as rd
from dsmnet_arch.preparation import inspection, writing

from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from conftest import load_script

H, W = 64, 72  # at least the options' 64 x 64 crop


def rainy(i):
    return 150 + 5 * i


def clean(i):
    return 20 + 5 * i


def save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def flat(value, h=H, w=W):
    return np.full((h, w, 3), value, np.uint8)


def read(split_dir, backend='disk', phase='val'):
    """{pair name stem: (input grey level, target grey level, input shape)} via PairedImageDataset."""
    suffix = '.lmdb' if backend == 'lmdb' else ''
    opt = dict(dataroot_lq=str(split_dir / f'input{suffix}'), dataroot_gt=str(split_dir / f'target{suffix}'),
               io_backend=dict(type=backend), filename_tmpl='{}', phase=phase, scale=1, gt_size=64,
               use_hflip=True, use_rot=False)
    out = {}
    for item in PairedImageDataset(opt):
        lq, gt = item['lq'], item['gt']
        assert lq.shape == gt.shape
        out[Path(item['lq_path']).stem] = (round(lq.mean().item() * 255), round(gt.mean().item() * 255),
                                           tuple(lq.shape))
    return out


def assert_levels(got, expected, tol=2):
    """``expected``: {name: (input level, target level)}; JPEG may shift a flat level by a little."""
    assert sorted(got) == sorted(expected)
    for name, (lq, gt) in expected.items():
        assert abs(got[name][0] - lq) <= tol and abs(got[name][1] - gt) <= tol, (name, got[name], (lq, gt))


def make_rain100(root, train=3, test=2):
    """RainTrainX/rain-N.png + norain-N.png, and Rain100X/rainy/rain-00N.png + Rain100X/norain-00N.png."""
    for i in range(1, train + 1):
        save(root / 'RainTrainH' / f'rain-{i}.png', flat(rainy(i)))
        save(root / 'RainTrainH' / f'norain-{i}.png', flat(clean(i)))
    for i in range(1, test + 1):
        save(root / 'Rain100H' / 'rainy' / f'rain-{i:03d}.png', flat(rainy(i)))
        save(root / 'Rain100H' / f'norain-{i:03d}.png', flat(clean(i)))
    return root


def test_rain100_to_paired_layout_on_disk_and_in_lmdb(tmp_path):
    src = make_rain100(tmp_path / 'src')
    save(src / 'Rain100H' / 'rainstreak-001.png', flat(0))  # JORDER extras fit no pair name
    (src / 'Rain100H' / 'readme.txt').write_text('not an image')
    report = rd.prepare_dataset('Rain100H', rd.resolve_sources('Rain100H', src=src), tmp_path / 'out', lmdb=True)

    train, test = report.splits
    assert (train.status, train.pairs, train.paper_pairs, test.pairs, test.paper_pairs) == ('written', 3, 1800, 2, 100)
    assert sorted(p.name for p in test.ignored) == ['rainstreak-001.png', 'readme.txt']
    assert 'the paper used 1800' in str(report) and 'ignored 2 files' in str(report)
    for split, names in (('train', ['1', '2', '3']), ('test', ['001', '002'])):
        expected = {n: (rainy(int(n)), clean(int(n))) for n in names}
        assert_levels(read(tmp_path / 'out' / split), expected, tol=0)
        assert_levels(read(tmp_path / 'out' / split, 'lmdb'), expected, tol=0)
        meta = (tmp_path / 'out' / split / 'input.lmdb' / 'meta_info.txt').read_text().split('\n')
        assert meta[0] == f'{names[0]}.png ({H},{W},3) 1'
    # unchanged files are hard links to the downloaded ones, not copies
    out = tmp_path / 'out'
    assert os.path.samefile(out / 'test' / 'input' / '001.png', src / 'Rain100H' / 'rainy' / 'rain-001.png')
    assert os.path.samefile(out / 'train' / 'target' / '2.png', src / 'RainTrainH' / 'norain-2.png')
    # the paper's 64 x 64 training crop, from disk and from LMDB
    for backend in ('disk', 'lmdb'):
        assert {v[2] for v in read(tmp_path / 'out' / 'train', backend, phase='train').values()} == {(3, 64, 64)}


def test_rain800_side_by_side_halves_rainy_right_is_the_input(tmp_path):
    folder = tmp_path / 'src' / 'training'
    for i in (1, 2):  # ID-CGAN's jpgs: clean left, rainy right
        save(folder / f'{i}.jpg', np.concatenate([flat(clean(i)), flat(rainy(i))], axis=1))
    # odd width 2k + 1: the middle column (255) belongs to neither half
    odd = np.concatenate([flat(clean(3), w=33), flat(255, w=1), flat(rainy(3), w=33)], axis=1)
    save(folder / '3.png', odd)
    report = rd.prepare_dataset('Rain800', {'train': folder}, tmp_path / 'out', lmdb=True)

    assert report.splits[0].placed == {'PNG halves written': 6}
    out = tmp_path / 'out' / 'train'
    assert sorted(os.listdir(out / 'input')) == ['1.png', '2.png', '3.png']
    for backend in ('disk', 'lmdb'):
        got = read(out, backend)
        assert_levels(got, {str(i): (rainy(i), clean(i)) for i in (1, 2, 3)})
        assert got['1'][2] == (3, H, W) and got['3'][2] == (3, H, 33)
    halves = [cv2.imread(str(out / side / '3.png')) for side in ('input', 'target')]
    assert (halves[0] == rainy(3)).all() and (halves[1] == clean(3)).all()  # exact: no trace of the middle column


def test_rain1400_fourteen_inputs_share_one_linked_target(tmp_path):
    src = tmp_path / 'Rain12600'
    for n in (1, 2):
        save(src / 'ground_truth' / f'{n}.jpg', flat(clean(n)))
        for m in range(1, 15):
            save(src / 'rainy_image' / f'{n}_{m}.jpg', flat(rainy(n) + 2 * m))
    report = rd.prepare_dataset('Rain1400', {'train': src}, tmp_path / 'out', lmdb=True)

    split = report.splits[0]
    assert split.pairs == 28 and split.placed == {'hard links': 56}
    out = tmp_path / 'out' / 'train'
    expected = {f'{n}_{m}': (rainy(n) + 2 * m, clean(n)) for n in (1, 2) for m in range(1, 15)}
    assert_levels(read(out), expected)
    assert_levels(read(out, 'lmdb'), expected)
    inodes = {n: {os.stat(out / 'target' / f'{n}_{m}.jpg').st_ino for m in range(1, 15)} for n in (1, 2)}
    assert inodes[1] == {os.stat(src / 'ground_truth' / '1.jpg').st_ino}
    assert len(inodes[2]) == 1 and inodes[1] != inodes[2]


def test_duplicated_targets_fall_back_to_symlinks_where_hard_links_fail(tmp_path, monkeypatch):
    src = tmp_path / 'Rain1400'
    save(src / 'ground_truth' / '901.jpg', flat(clean(1)))
    for m in (1, 2, 3):
        save(src / 'rainy_image' / f'901_{m}.jpg', flat(rainy(1)))
    monkeypatch.setattr(os, 'link', lambda *a, **k: (_ for _ in ()).throw(OSError('no hard links here')))
    report = rd.prepare_dataset('Rain1400', {'test': src}, tmp_path / 'out')

    assert report.splits[0].placed == {'copies': 4, 'symlinks': 2}
    target = tmp_path / 'out' / 'test' / 'target'
    assert not (target / '901_1.jpg').is_symlink()
    assert os.readlink(target / '901_2.jpg') == '901_1.jpg' and os.readlink(target / '901_3.jpg') == '901_1.jpg'
    assert_levels(read(tmp_path / 'out' / 'test'), {f'901_{m}': (rainy(1), clean(1)) for m in (1, 2, 3)})


def make_bad_rain100(root):
    make_rain100(root, train=6, test=1)
    folder = root / 'RainTrainH'
    save(folder / 'norain-2.png', flat(clean(2), h=H + 1))  # size mismatch
    (folder / 'norain-3.png').unlink()  # input without target
    (folder / 'rain-4.png').unlink()  # target without input
    (folder / 'rain-5.png').write_bytes(b'')  # empty
    data = (folder / 'norain-6.png').read_bytes()
    (folder / 'norain-6.png').write_bytes(data[:len(data) // 2])  # truncated
    (folder / 'rain-7.png').write_bytes(b'<html>quota exceeded</html>')  # not an image
    save(folder / 'norain-7.png', flat(clean(7)))
    return root


def test_problems_stop_the_run_before_anything_is_written(tmp_path):
    src = make_bad_rain100(tmp_path / 'src')
    with pytest.raises(rd.PreparationError) as err:
        rd.prepare_dataset('Rain100H', rd.resolve_sources('Rain100H', src=src), tmp_path / 'out')
    assert '\n' not in str(err.value) and '6 problem(s), nothing written' in str(err.value)
    assert str(src / 'RainTrainH') in str(err.value)
    problems = {(p.kind, p.path.name): p.detail for p in err.value.report.splits[0].problems}
    assert problems == {
        ('size mismatch', 'rain-2.png'): f'input {H}x{W}, target norain-2.png {H + 1}x{W}',
        ('input without target', 'rain-3.png'): '',
        ('target without input', 'norain-4.png'): '',
        ('unreadable', 'rain-5.png'): 'empty file',
        ('unreadable', 'norain-6.png'): 'truncated PNG (no IEND chunk)',
        ('unreadable', 'rain-7.png'): 'not a decodable image',
    }
    assert 'train: not written, 1 pairs' in str(err.value.report)
    assert '4 pairs touched by the problems above would be left out by --skip-bad' in str(err.value.report)
    assert not (tmp_path / 'out').exists()


def test_skip_bad_leaves_the_bad_pairs_out(tmp_path):
    src = make_bad_rain100(tmp_path / 'src')
    report = rd.prepare_dataset('Rain100H', rd.resolve_sources('Rain100H', src=src), tmp_path / 'out', skip_bad=True)
    train = report.splits[0]
    assert (train.pairs, train.skipped_pairs, len(train.problems)) == (1, 4, 6)  # only pair 1 is sound
    assert_levels(read(tmp_path / 'out' / 'train'), {'1': (rainy(1), clean(1))}, tol=0)
    assert '4 pairs touched by the problems above were left out' in str(report)


def test_truncated_jpeg_and_clashing_names_are_problems(tmp_path):
    folder = tmp_path / 'test_syn'
    pair = np.concatenate([flat(clean(1)), flat(rainy(1))], axis=1)
    data = cv2.imencode('.jpg', pair)[1].tobytes()
    (folder).mkdir()
    (folder / '1.jpg').write_bytes(data[:-100])
    save(folder / '2.jpg', pair)
    save(folder / '2.png', pair)  # both would become 2.png
    with pytest.raises(rd.PreparationError) as err:
        rd.prepare_dataset('Rain800', {'test': folder}, tmp_path / 'out')
    kinds = sorted((p.kind, p.path.name) for p in err.value.report.splits[0].problems)
    assert kinds == [('name clash', '2.jpg'), ('name clash', '2.png'), ('unreadable', '1.jpg')]
    assert 'truncated JPEG' in str(err.value.report)


def test_second_run_is_a_no_op_and_can_add_the_lmdbs(tmp_path):
    src = make_rain100(tmp_path / 'src')
    sources = rd.resolve_sources('Rain100H', src=src)
    rd.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / 'out').rglob('*')}

    report = rd.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    assert [s.status for s in report.splits] == ['already prepared', 'already prepared']
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / 'out').rglob('*')} == before

    report = rd.prepare_dataset('Rain100H', sources, tmp_path / 'out', lmdb=True, compress_level=0)
    assert [s.status for s in report.splits] == ['LMDB added', 'LMDB added']
    assert_levels(read(tmp_path / 'out' / 'train', 'lmdb'), {str(i): (rainy(i), clean(i)) for i in (1, 2, 3)}, tol=0)
    assert (tmp_path / 'out' / 'test' / 'input.lmdb' / 'meta_info.txt').read_text().startswith(f'001.png ({H},{W},3) 0')
    assert not list((tmp_path / 'out').rglob('.*incomplete*'))
    assert [s.status for s in rd.prepare_dataset('Rain100H', sources, tmp_path / 'out', lmdb=True).splits] == [
        'already prepared', 'already prepared']


def test_a_foreign_or_half_written_destination_is_refused(tmp_path):
    src = make_rain100(tmp_path / 'src')
    sources = rd.resolve_sources('Rain100H', src=src)
    (tmp_path / 'out' / 'train' / 'input').mkdir(parents=True)
    with pytest.raises(rd.PreparationError, match=r'out/train exists but holds no prepared.json'):
        rd.prepare_dataset('Rain100H', sources, tmp_path / 'out')
    assert os.listdir(tmp_path / 'out' / 'train') == ['input']


def test_an_interrupted_run_leaves_no_split_behind(tmp_path, monkeypatch):
    src = make_rain100(tmp_path / 'src')
    calls = []

    def failing_place(src_path, dst, placed):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        os.link(src_path, dst)

    monkeypatch.setattr(writing, '_place', failing_place)
    with pytest.raises(KeyboardInterrupt):
        rd.prepare_dataset('Rain100H', rd.resolve_sources('Rain100H', src=src), tmp_path / 'out')
    assert os.listdir(tmp_path / 'out') == []


def test_lmdb_map_size_holds_incompressible_images_that_basicsr_guess_does_not(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'imgs'
    names = ['0.png'] + [f'{i}.png' for i in range(1, 6)]
    save(folder / names[0], rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))  # a small first image...
    for name in names[1:]:  # ...then large noise, which PNG cannot compress
        save(folder / name, rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    keys = [Path(n).stem for n in names]
    with pytest.raises(lmdb.MapFullError):  # BasicSR's own estimate: 10 x the first image's size
        make_lmdb_from_imgs(str(folder), str(tmp_path / 'guess.lmdb'), names, keys, compress_level=0)

    infos = [inspection.inspect_image(folder / n)[0] for n in names]
    map_size = writing.lmdb_map_size(infos)
    make_lmdb_from_imgs(str(folder), str(tmp_path / 'ours.lmdb'), names, keys, compress_level=0, map_size=map_size)
    used = os.path.getsize(tmp_path / 'ours.lmdb' / 'data.mdb')
    assert 5 * 300 * 400 * 3 < used <= map_size


def test_cli_prints_the_report_and_fails_with_one_line_naming_the_file(tmp_path, capsys):
    cli = load_script('prepare_rain_datasets')
    src = make_rain100(tmp_path / 'src')
    dst = tmp_path / 'out'
    assert cli.main(['--dataset', 'Rain100H', '--src-test', str(src / 'Rain100H'), '--dst', str(dst), '--lmdb']) == 0
    out = capsys.readouterr().out
    assert f'Rain100H -> {dst}' in out and 'test: written, 2 pairs (paper: 100)' in out and 'train' not in out
    assert sorted(os.listdir(dst)) == ['test']

    (src / 'RainTrainH' / 'norain-1.png').write_bytes(b'')
    assert cli.main(['--dataset', 'Rain100H', '--src', str(src), '--dst', str(dst)]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]  # after the progress bars (stderr too)
    assert error.startswith('error: 1 problem(s)')
    assert f'unreadable: {src / "RainTrainH" / "norain-1.png"} (empty file)' in error
    assert 'test: already prepared' in captured.out

    assert cli.main(['--dataset', 'Rain800', '--src', str(src), '--dst', str(dst)]) == 1
    assert f'folder {src / "training"} not found' in capsys.readouterr().err


def test_a_folder_without_pairs_is_an_error_before_any_split_is_written(tmp_path):
    src = make_rain100(tmp_path / 'src')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(rd.PreparationError, match=r'No usable Rain100H pairs in .*empty \(see docs/datasets.md'):
        rd.prepare_dataset('Rain100H', {'train': src / 'RainTrainH', 'test': tmp_path / 'empty'}, tmp_path / 'out')
    (src / 'Rain100H' / 'norain-001.png').write_bytes(b'')
    (src / 'Rain100H' / 'norain-002.png').unlink()
    with pytest.raises(rd.PreparationError, match=r'No usable .* once the pairs with problems are left out'):
        rd.prepare_dataset('Rain100H', rd.resolve_sources('Rain100H', src=src), tmp_path / 'out', skip_bad=True)
    assert not (tmp_path / 'out').exists()


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
