"""``python -m dsmnet_arch.link_basicsr`` on a clone laid out like BasicSR's repository, from the installed basicsr.

The clone's own scripts training and testing through the link: tests/end_to_end/test_basicsr_clone.py.
"""
import os

from dsmnet_arch.link_basicsr import STUB, STUB_NAME, main, our_options

import basicsr

from conftest import make_clone, snapshot


def test_link_is_idempotent_and_undo_restores_the_clone_byte_for_byte(tmp_path, capsys):
    clone = make_clone(tmp_path)
    (clone / 'options' / 'train_DSMNet_demo.yml').write_text('name: the user\'s own\n')  # a name ours also has
    before = snapshot(clone)

    assert main([str(clone)]) == 0
    out = capsys.readouterr().out
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    assert stub.read_text() == STUB
    assert f'left {clone / "options" / "train_DSMNet_demo.yml"} alone' in out
    # without PYTHONPATH="./:${PYTHONPATH}" the clone's scripts would import the installed basicsr: said so
    assert f'imports basicsr from {os.path.join(os.path.dirname(basicsr.__file__), "__init__.py")}, not from' in out
    linked = {name for name, entry in snapshot(clone).items() if entry[0] == 'link'}
    ours = {os.path.join('options', s.name) for s in our_options()}
    assert 'options/train_DSMNet_Rain100H.yml' in ours and linked == ours - {'options/train_DSMNet_demo.yml'}
    assert all(os.readlink(clone / name) == str(s) for name, s in zip(sorted(ours), our_options()) if name in linked)

    linked_once, mtime = snapshot(clone), stub.stat().st_mtime_ns
    assert main([str(clone)]) == 0
    assert 'already linked' in capsys.readouterr().out
    assert snapshot(clone) == linked_once and stub.stat().st_mtime_ns == mtime

    assert main(['--undo', str(clone)]) == 0
    assert snapshot(clone) == before
    assert main(['--undo', str(clone)]) == 0
    assert 'nothing to undo' in capsys.readouterr().out
    assert snapshot(clone) == before


def test_refuses_files_it_did_not_write_and_folders_that_are_not_clones(tmp_path, capsys):
    clone = make_clone(tmp_path)
    stub = clone / 'basicsr' / 'archs' / STUB_NAME
    stub.write_text('# the user\'s own arch\n')
    before = snapshot(clone)
    for args in ([str(clone)], ['--undo', str(clone)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and f'{stub}' in err and 'not written by this command' in err
        assert snapshot(clone) == before

    assert main([str(clone / 'basicsr')]) == 1
    assert f'give the clone, its parent: {clone}' in capsys.readouterr().err
    fork = tmp_path / 'Restormer'
    (fork / 'basicsr' / 'models' / 'archs').mkdir(parents=True)
    (fork / 'basicsr' / 'models' / 'archs' / '__init__.py').write_text('')
    assert main([str(fork)]) == 1
    assert 'docs/forks.md' in capsys.readouterr().err
    assert main([str(tmp_path / 'missing')]) == 1
    assert 'is not a folder' in capsys.readouterr().err
