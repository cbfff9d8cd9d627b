"""Preparation of today's benchmark sets (Rain13K, Rain200L/H, DID-Data, SPA-Data) from small native trees.

The images are flat grey levels that name the pair and the side (see test_prepare_rain_datasets.py), and
every prepared tree is read back through BasicSR's own PairedImageDataset.
"""
import os

import numpy as np
import pytest

from dsmnet_arch import preparation as rd

from conftest import load_script
from test_prepare_rain_datasets import assert_levels, clean, flat, rainy, read, save

RAIN13K_SETS = ('Test100', 'Rain100H', 'Rain100L', 'Test2800', 'Test1200')


def save_pair(folder, name, i, target_name=None):
    """``folder/input/name`` (rainy level of i) and ``folder/target/<target_name or name>`` (clean level of i)."""
    save(folder / 'input' / name, flat(rainy(i)))
    save(folder / 'target' / (target_name or name), flat(clean(i)))


def make_rain13k(root, train='train/Rain13K', sets=RAIN13K_SETS):
    """Restormer's ``Datasets/``: two training pairs (one a jpg rainy with a png clean image), two per test set."""
    save_pair(root / train, '1.png', 1)
    save_pair(root / train, '2.jpg', 2, target_name='2.png')
    for k, name in enumerate(sets):
        for i in (1, 2):
            save_pair(root / 'test' / name, f'{i}.png', 3 * k + i)
    return root


def test_rain13k_prepares_the_training_set_and_all_five_test_sets(tmp_path):
    src = make_rain13k(tmp_path / 'Datasets')
    sources = rd.resolve_sources('Rain13K', src=src)
    assert list(sources) == ['train'] + [f'test/{name}' for name in RAIN13K_SETS]
    report = rd.prepare_dataset('Rain13K', sources, tmp_path / 'out', lmdb=True)

    out = tmp_path / 'out'
    train = report.splits[0]
    assert (train.split, train.pairs, train.paper_pairs) == ('train', 2, 13712)
    assert train.placed == {'hard links': 3, 'PNGs converted': 1}  # 2.jpg is decoded and written as 2.png
    assert sorted(os.listdir(out / 'train' / 'input')) == ['1.png', '2.png']
    for backend in ('disk', 'lmdb'):
        assert_levels(read(out / 'train', backend), {'1': (rainy(1), clean(1)), '2': (rainy(2), clean(2))})
        for k, name in enumerate(RAIN13K_SETS):
            assert_levels(read(out / 'test' / name, backend),
                          {str(i): (rainy(3 * k + i), clean(3 * k + i)) for i in (1, 2)}, tol=0)
    assert [(s.split, s.paper_pairs) for s in report.splits[1:]] == [
        ('test/Test100', 100), ('test/Rain100H', 100), ('test/Rain100L', 100), ('test/Test2800', 2800),
        ('test/Test1200', 1200)]
    assert '  test/Test2800: written, 2 pairs (paper: 2800)' in str(report)
    assert sorted(os.listdir(out / 'test')) == sorted(RAIN13K_SETS)

    chosen = rd.resolve_sources('Rain13K', src=src, test_sets=['Rain100H', 'Test100'])
    assert list(chosen) == ['train', 'test/Rain100H', 'test/Test100']
    assert list(rd.resolve_sources('Rain13K', src_test=src / 'test', test_sets=['Test1200'])) == ['test/Test1200']


def test_rain13k_in_mprnet_arrangement_without_the_rain13k_level(tmp_path):
    src = make_rain13k(tmp_path / 'Datasets', train='train')
    sources = rd.resolve_sources('Rain13K', src=src)
    assert sources['train'] == src / 'train'
    rd.prepare_dataset('Rain13K', {'train': sources['train']}, tmp_path / 'out')
    assert_levels(read(tmp_path / 'out' / 'train'), {'1': (rainy(1), clean(1)), '2': (rainy(2), clean(2))})


def test_rain13k_half_present_or_wrongly_paired_download_is_a_one_line_error(tmp_path, capsys):
    src = make_rain13k(tmp_path / 'Datasets', sets=('Test100', 'Rain100H', 'Rain100L', 'Test2800'))
    with pytest.raises(rd.PreparationError, match=r'^Rain13K test set Test1200: folder .*test/Test1200 not found'):
        rd.resolve_sources('Rain13K', src=src)
    with pytest.raises(rd.PreparationError, match=r'--test-set: Rain200H has one test set; only Rain13K holds'):
        rd.resolve_sources('Rain200H', src=src, test_sets=['Rain100H'])

    save(src / 'test' / 'Test1200' / 'input' / '1.png', flat(rainy(1)))  # no target
    save(src / 'test' / 'Test1200' / 'target' / '2.png', flat(clean(2)))  # no input
    cli = load_script('prepare_rain_datasets')
    assert cli.main(['--dataset', 'Rain13K', '--src', str(src), '--dst', str(tmp_path / 'out')]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error == (f'error: 2 problem(s), nothing written; first: input without target: '
                     f'{src / "test" / "Test1200" / "input" / "1.png"} (--skip-bad leaves such pairs out)')
    assert f'target without input: {src / "test" / "Test1200" / "target" / "2.png"}' in captured.out
    assert not (tmp_path / 'out').exists()

    assert cli.main(['--dataset', 'Rain13K', '--src', str(src), '--dst', str(tmp_path / 'out'),
                     '--test-set', 'Rain100L', '--test-set', 'Test100']) == 0
    assert '  test/Rain100L: written, 2 pairs (paper: 100)' in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / 'out' / 'test')) == ['Rain100L', 'Test100']


def test_a_count_known_to_differ_from_the_paper_says_why(tmp_path):
    folder = tmp_path / 'Test100'
    for i in range(98):  # the Test100 download holds 98 of the paper's 100 pairs
        save_pair(folder, f'{i}.png', 0)
    report = rd.prepare_dataset('Rain13K', {'test/Test100': folder}, tmp_path / 'out')
    assert report.splits[0].warnings == [
        '98 pairs where the paper used 100: the Test100 download is reported to hold 98']


@pytest.mark.parametrize('arrangement', ['DRSformer', 'NeRD-Rain'])
def test_rain200h_in_drsformer_and_nerd_rain_arrangements(tmp_path, arrangement):
    src = tmp_path / 'Datasets'
    for split, count in (('train', 3), ('test', 2)):
        folder = src / split / 'Rain200H' if arrangement == 'DRSformer' else src / 'Rain200H' / split
        for i in range(1, count + 1):
            save_pair(folder, f'{i}.png', i)
    report = rd.prepare_dataset('Rain200H', rd.resolve_sources('Rain200H', src=src), tmp_path / 'out')
    assert [(s.split, s.pairs, s.paper_pairs) for s in report.splits] == [('train', 3, 1800), ('test', 2, 200)]
    assert_levels(read(tmp_path / 'out' / 'train'), {str(i): (rainy(i), clean(i)) for i in (1, 2, 3)}, tol=0)
    assert_levels(read(tmp_path / 'out' / 'test'), {str(i): (rainy(i), clean(i)) for i in (1, 2)}, tol=0)
    with pytest.raises(rd.PreparationError, match=r'Rain200L train split: folder .*/Rain200L or .*Rain200L/train'):
        rd.resolve_sources('Rain200L', src=src)


def did_image(i):
    """A DID-MDN jpg: rainy LEFT half, clean RIGHT half."""
    return np.concatenate([flat(rainy(i)), flat(clean(i))], axis=1)


def test_did_data_three_densities_rainy_left_and_a_test_folder_given_by_hand(tmp_path):
    src = tmp_path / 'downloads'
    for k, density in enumerate(('Rain_Heavy', 'Rain_Medium', 'Rain_Light')):
        for idx in (0, 1):
            save(src / 'DID-MDN-training' / density / 'train2018new' / f'{idx}.jpg', did_image(3 * k + idx))
    for idx in (1, 2):
        save(tmp_path / 'did_test' / f'{idx}.jpg', did_image(10 + idx))
    with pytest.raises(rd.PreparationError, match=r"DID-Data test split: the release's name .* --src-test$"):
        rd.resolve_sources('DID-Data', src=src)
    sources = rd.resolve_sources('DID-Data', src=src, src_test=tmp_path / 'did_test')
    report = rd.prepare_dataset('DID-Data', sources, tmp_path / 'out', lmdb=True)

    assert [(s.split, s.pairs, s.paper_pairs) for s in report.splits] == [('train', 6, 12000), ('test', 2, 1200)]
    expected = {f'{density}_{idx}': (rainy(3 * k + idx), clean(3 * k + idx))
                for k, density in enumerate(('Heavy', 'Medium', 'Light')) for idx in (0, 1)}
    for backend in ('disk', 'lmdb'):
        assert_levels(read(tmp_path / 'out' / 'train', backend), expected)
        assert_levels(read(tmp_path / 'out' / 'test', backend),
                      {str(i): (rainy(10 + i), clean(10 + i)) for i in (1, 2)})
    assert read(tmp_path / 'out' / 'test')['1'][2] == (3, 64, 72)  # one half of the 64 x 144 jpg

    save_pair(tmp_path / 'repacked', '5.png', 5)  # a copy re-packed as input/target
    rd.prepare_dataset('DID-Data', {'test': tmp_path / 'repacked'}, tmp_path / 'out2')
    assert_levels(read(tmp_path / 'out2' / 'test'), {'5': (rainy(5), clean(5))}, tol=0)

    (src / 'DID-MDN-training' / 'Rain_Light' / 'train2018new' / '0.jpg').unlink()
    (src / 'DID-MDN-training' / 'Rain_Light' / 'train2018new' / '1.jpg').unlink()
    (src / 'DID-MDN-training' / 'Rain_Light' / 'train2018new').rmdir()
    with pytest.raises(rd.PreparationError, match=r'^DID-Data layout: folder .*Rain_Light/train2018new not found$'):
        rd.prepare_dataset('DID-Data', {'train': src / 'DID-MDN-training'}, tmp_path / 'out3')


def make_spa(root):
    """SPANet's lists: training/real_world.txt (paths from its folder), testing/real_test_1000.txt (``/``-rooted
    paths from the folder above it); three rainy frames of scene 000 share one clean image."""
    train = root / 'training'
    save(train / 'real_world_gt' / '000' / '000.png', flat(clean(1)))
    save(train / 'real_world_gt' / '001' / '001.png', flat(clean(2)))
    lines = []
    for frame, (scene, level) in enumerate([('000', 1), ('000', 1), ('000', 1), ('001', 2)]):
        rainy_path = f'real_world/{scene}/{scene}-{frame}/{scene}-{frame}_0_0.png'
        save(train / rainy_path, flat(rainy(level) + frame))
        lines.append(f'./{rainy_path} ./real_world_gt/{scene}/{scene}.png')
    (train / 'real_world.txt').write_text('\n'.join(lines) + '\n')
    test = root / 'testing'
    for i in (1, 2):
        save(test / 'real_test_1000' / 'rain' / f'{i}.png', flat(rainy(10 + i)))
        save(test / 'real_test_1000' / 'gt' / f'{i}.png', flat(clean(10 + i)))
    (test / 'real_test_1000.txt').write_text(''.join(f'/testing/real_test_1000/rain/{i}.png '
                                                     f'/testing/real_test_1000/gt/{i}.png\n' for i in (1, 2)))
    return root


def test_spa_data_pairs_by_its_lists_and_links_shared_clean_images(tmp_path):
    src = make_spa(tmp_path / 'SPA')
    report = rd.prepare_dataset('SPA-Data', rd.resolve_sources('SPA-Data', src=src), tmp_path / 'out')

    assert [(s.split, s.pairs, s.paper_pairs) for s in report.splits] == [('train', 4, None), ('test', 2, 1000)]
    out = tmp_path / 'out'
    expected = {f'{s}-{f}_0_0': (rainy(level) + f, clean(level)) for f, (s, level) in
                enumerate([('000', 1), ('000', 1), ('000', 1), ('001', 2)])}
    assert_levels(read(out / 'train'), expected, tol=0)
    assert_levels(read(out / 'test'), {str(i): (rainy(10 + i), clean(10 + i)) for i in (1, 2)}, tol=0)
    shared = {os.stat(out / 'train' / 'target' / f'000-{f}_0_0.png').st_ino for f in range(3)}
    assert shared == {os.stat(src / 'training' / 'real_world_gt' / '000' / '000.png').st_ino}


def test_spa_data_missing_listed_file_or_bad_line_is_a_problem_naming_it(tmp_path, capsys):
    src = make_spa(tmp_path / 'SPA')
    (src / 'training' / 'real_world_gt' / '001' / '001.png').unlink()
    with open(src / 'training' / 'real_world.txt', 'a') as f:
        f.write('./real_world/000/000-0/000-0_0_0.png\n')
    with pytest.raises(rd.PreparationError) as err:
        rd.prepare_dataset('SPA-Data', rd.resolve_sources('SPA-Data', src=src), tmp_path / 'out')
    missing = src / 'training' / 'real_world_gt' / '001' / '001.png'
    assert str(err.value).startswith(f'2 problem(s), nothing written; first: listed file missing: {missing} '
                                     '(real_world.txt line 4)')
    assert (f'bad list line: {src / "training" / "real_world.txt"} (line 5: expected "<rainy> <clean>", got 1 field(s))'
            in str(err.value.report))

    (src / 'testing' / 'real_test_1000.txt').write_text('/elsewhere/1.png /elsewhere/gt/1.png\n')
    with pytest.raises(rd.PreparationError, match=r'real_test_1000.txt line 1: /elsewhere/1.png is neither in '):
        rd.prepare_dataset('SPA-Data', {'test': src / 'testing'}, tmp_path / 'out')
    with pytest.raises(rd.PreparationError, match=r'SPA-Data layout: .* holds neither input/ and target/ nor a'):
        rd.prepare_dataset('SPA-Data', {'test': tmp_path}, tmp_path / 'out')
