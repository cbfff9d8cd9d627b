"""dsmnet_arch.checkpoint: untrusted files, where the weights are, the recorded arguments, and atomic saving.

DerainModel's loading through it: tests/models/test_derain_model.py; which training state a resumed run
picks (compat's resume patch): tests/test_compat.py.
"""
import os
import stat

import pytest
import torch

import dsmnet_arch  # noqa: F401  (applies the BasicSR fixes)
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import (
    arch_from_checkpoint,
    arch_record,
    atomic_save,
    load_checkpoint,
    state_dict_from_checkpoint,
)

from conftest import TINY, tiny


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'Checkpoint file not found: {tmp_path / "none.pth"}$'):
        load_checkpoint(tmp_path / 'none.pth')
    torch.save({'params': tiny(0).state_dict()}, tmp_path / 'w.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'w.pth').read_bytes()[:3000])
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / 'cut.pth')
    message = str(err.value)
    assert message.startswith(f'Cannot load checkpoint {tmp_path / "cut.pth"}: not a readable PyTorch checkpoint')
    assert len(message.splitlines()) == 1


def test_weights_are_found_under_params_ema_params_or_bare():
    ema, plain = tiny(1).state_dict(), tiny(2).state_dict()
    found, key = state_dict_from_checkpoint({'params': plain, 'params_ema': ema}, 'f', 'params_ema')
    assert key == 'params_ema' and all(torch.equal(found[k], ema[k]) for k in ema)
    found, key = state_dict_from_checkpoint({'params': plain}, 'f', 'params_ema')  # BasicSR's fallback
    assert key == 'params' and all(torch.equal(found[k], plain[k]) for k in plain)
    found, _ = state_dict_from_checkpoint(dict(plain), 'f', 'params')  # a bare state dict
    assert found.keys() == plain.keys()
    found, _ = state_dict_from_checkpoint({'params': {f'module.{k}': v for k, v in plain.items()}}, 'f')
    assert found.keys() == plain.keys()  # saved from a DataParallel wrapper: prefix dropped


@pytest.mark.parametrize('content', [{'params': {'w': 'not a tensor'}}, {'params': {}}, {'params': [torch.ones(1)]},
                                     {'params': {3: torch.ones(1)}}, [torch.ones(1)]])
def test_anything_but_a_state_dict_of_tensors_is_refused(content):
    with pytest.raises(ValueError, match='Cannot use W.pth: expected a state dict of tensors, bare or under the key '
                       '"params"'):
        state_dict_from_checkpoint(content, 'W.pth', 'params')


def test_arch_record_fills_in_every_default_and_reads_back():
    record = arch_record({'type': 'DSMNet', 'num_feat': 8, 'mab_variant': 'M4', 'kernel_sizes': (1, 3),
                          'res_scale': 0.1}, DSMNet)
    assert record == dict(type='DSMNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=4, kernel_sizes=[1, 3],
                          dilated=False, attention='ca+sa', num_subspaces=8, reduction=4, mab_variant='M4',
                          level_down=True, level_up=True, level_dense=True, res_scale=0.1)
    arch_type, args = arch_from_checkpoint({'params': {}, 'arch': record}, 'f')
    net = DSMNet(**args)
    assert arch_type == 'DSMNet' and net.mab['0_0'].across_down is False and net.mab['0_0'].res_scale == 0.1
    assert arch_from_checkpoint({'params': {}}, 'f') is None and arch_from_checkpoint([], 'f') is None
    for bad in ({'num_feat': 8}, {'type': 3}, 'DSMNet', {'type': 'DSMNet', 1: 2}):
        with pytest.raises(ValueError, match='Cannot use f: its "arch" entry is not a network type with arguments'):
            arch_from_checkpoint({'arch': bad}, 'f')


class RunsCode:
    """Unpickles by calling a function: what a weights-only load must refuse."""

    def __reduce__(self):
        return os.getpid, ()


def test_load_checkpoint_maps_the_tensors_and_never_unpickles_code(tmp_path, monkeypatch):
    torch.save({'params': {'w': torch.ones(2)}}, tmp_path / 'w.pth')
    loaded = load_checkpoint(tmp_path / 'w.pth', map_location='meta')
    assert loaded['params']['w'].device == torch.device('meta') and loaded['params']['w'].shape == (2, )
    torch.save({'params': RunsCode()}, tmp_path / 'code.pth')
    message = (f'Cannot load checkpoint {tmp_path / "code.pth"}: not a readable PyTorch checkpoint of tensors '
               '(UnpicklingError: Weights only load failed)')  # the first sentence of torch's message
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / 'code.pth')
    assert str(err.value) == message
    # torch lets this variable switch weights-only loading off wherever the call does not ask for it
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / 'code.pth')
    assert str(err.value) == message


@pytest.mark.parametrize('error, reason', [(RuntimeError('First sentence. Second one.\nSecond line'), 'First sentence'),
                                           (EOFError('  \n'), 'EOFError'), (KeyError(), 'KeyError')])
def test_load_checkpoint_gives_the_errors_first_sentence_or_its_type(tmp_path, monkeypatch, error, reason):
    def failing_load(*args, **kwargs):
        raise error

    (tmp_path / 'w.pth').write_bytes(b'')
    monkeypatch.setattr(torch, 'load', failing_load)
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / 'w.pth')
    assert str(err.value) == (f'Cannot load checkpoint {tmp_path / "w.pth"}: not a readable PyTorch checkpoint of '
                              f'tensors ({type(error).__name__}: {reason})')


def test_weights_default_to_params_and_no_key_takes_the_dict_as_is():
    plain = tiny(2).state_dict()
    found, key = state_dict_from_checkpoint({'params': plain, 'params_ema': tiny(1).state_dict()}, 'f')
    assert key == 'params' and all(torch.equal(found[k], plain[k]) for k in plain)
    with pytest.raises(ValueError, match='bare or under the key "params"'):
        state_dict_from_checkpoint([torch.ones(1)], 'f')
    bare = {'params.weight': torch.ones(1), 'module.bias': torch.zeros(1)}  # a bare dict that has a 'params...' key
    found, key = state_dict_from_checkpoint(bare, 'f', None)
    assert key is None and found.keys() == {'params.weight', 'bias'}


class Toy:

    def __init__(self, width, depth=2, sizes=(1, 3), name='toy'):
        pass


def test_arch_record_keeps_the_options_type_or_names_the_class():
    assert arch_record({'type': 'ToyNet', 'width': 4, 'sizes': (5, )}, Toy) == dict(
        type='ToyNet', depth=2, sizes=[5], name='toy', width=4)
    assert arch_record({'width': 4}, Toy) == dict(type='Toy', depth=2, sizes=[1, 3], name='toy', width=4)
    assert list(arch_record({'width': 4, 'type': 'ToyNet'}, Toy)) == ['type', 'depth', 'sizes', 'name', 'width']


def test_atomic_save_replaces_the_file_through_a_hidden_file_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'models').mkdir()
    atomic_save({'params': {'w': torch.ones(2)}}, os.path.join('models', 'net.pth'))  # a relative path
    atomic_save({'params': {'w': torch.zeros(3)}}, os.path.join('models', 'net.pth'))
    assert os.listdir(tmp_path / 'models') == ['net.pth']
    assert torch.equal(torch.load(tmp_path / 'models' / 'net.pth', weights_only=True)['params']['w'], torch.zeros(3))

    during = []
    save = torch.save

    def recording_save(obj, f, *args, **kwargs):  # what the folder holds while the file is written
        during.append(sorted(os.listdir(tmp_path / 'models')))
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', recording_save)
    atomic_save({'w': torch.ones(1)}, str(tmp_path / 'models' / 'other.pth'))
    (hidden, visible), = during
    assert visible == 'net.pth' and hidden.startswith('.other.pth.') and hidden.endswith('.tmp')
    assert sorted(os.listdir(tmp_path / 'models')) == ['net.pth', 'other.pth']


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_save_gives_the_permissions_of_a_plainly_created_file(tmp_path, umask, mode):
    umask = os.umask(umask)
    try:
        atomic_save({'w': torch.ones(1)}, tmp_path / 'net.pth')
        with open(tmp_path / 'plain', 'wb'):
            pass
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / 'net.pth').st_mode) == stat.S_IMODE(os.stat(tmp_path / 'plain').st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / 'net.pth').st_mode) == mode  # 0o644: not mkstemp's 0o600


def test_arch_mismatch_compares_only_a_record_of_the_same_type():
    from dsmnet_arch.checkpoint import arch_mismatch

    record = arch_record({'type': 'DSMNet', **TINY}, DSMNet)
    ours = {'type': 'DSMNet', **TINY, 'num_levels': 3}
    assert arch_mismatch({'params': {}, 'arch': record}, 'f', ours, DSMNet) == ['num_levels=3 vs 2']
    assert arch_mismatch({'params': {}, 'arch': record}, 'f', {'type': 'DSMNet', **TINY}, DSMNet) == []
    assert arch_mismatch({'params': {}}, 'f', ours, DSMNet) == []  # no record: the shapes decide
    assert arch_mismatch({'params': {}, 'arch': record}, 'f', None, DSMNet) == []  # no options for this network
    assert arch_mismatch({'params': {}, 'arch': dict(record, type='Other')}, 'f', ours, DSMNet) == []
    with pytest.raises(ValueError, match='Cannot use W.pth: its "arch" entry'):
        arch_mismatch({'arch': ['DSMNet']}, 'W.pth', ours, DSMNet)


def test_a_record_without_an_argument_compares_as_that_arguments_default():
    """A checkpoint recorded before res_scale existed was trained with the default (1, the paper's eq. 11): options
    with res_scale 0.1 differ from it, options without res_scale do not."""
    from dsmnet_arch.checkpoint import arch_mismatch

    old = {k: v for k, v in arch_record({'type': 'DSMNet', **TINY}, DSMNet).items() if k != 'res_scale'}
    ckpt = {'params': {}, 'arch': old}
    assert arch_mismatch(ckpt, 'f', {'type': 'DSMNet', **TINY, 'res_scale': 0.1}, DSMNet) == ['res_scale=0.1 vs 1.0']
    assert arch_mismatch(ckpt, 'f', {'type': 'DSMNet', **TINY}, DSMNet) == []
    assert arch_mismatch(ckpt, 'f', {'type': 'DSMNet', **TINY, 'res_scale': 1.0, 'num_feat': 16}, DSMNet) == [
        f'num_feat=16 vs {TINY["num_feat"]}']


def test_bundle_weights_keeps_the_network_its_record_and_the_options_text(tmp_path):
    from dsmnet_arch.checkpoint import bundle_weights

    net = tiny(0)
    ema = {k: v + 1 for k, v in net.state_dict().items()}
    record = arch_record({'type': 'DSMNet', **TINY}, DSMNet)
    torch.save({'params': net.state_dict(), 'params_ema': ema, 'arch': record}, tmp_path / 'net_g_9.pth')
    (tmp_path / 'train.yml').write_text('name: bundled\n')
    bundle_weights(str(tmp_path / 'net_g_9.pth'), str(tmp_path / 'out.pth'), str(tmp_path / 'train.yml'))
    out = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert set(out) == {'params', 'arch', 'options'} and out['arch'] == record and out['options'] == 'name: bundled\n'
    assert all(torch.equal(out['params'][k], ema[k]) for k in ema)  # the EMA weights when there are any
    torch.save({'params': net.state_dict()}, tmp_path / 'basicsr.pth')
    with pytest.raises(ValueError, match='basicsr.pth records no network arguments'):
        bundle_weights(str(tmp_path / 'basicsr.pth'), str(tmp_path / 'out2.pth'), str(tmp_path / 'train.yml'))
    torch.save({'arch': record}, tmp_path / 'no_params.pth')
    with pytest.raises(ValueError, match='Cannot use .*no_params.pth: expected a state dict of tensors'):
        bundle_weights(str(tmp_path / 'no_params.pth'), str(tmp_path / 'out2.pth'), str(tmp_path / 'train.yml'))
    torch.save({'params': net.state_dict(), 'arch': ['DSMNet']}, tmp_path / 'bad_arch.pth')
    with pytest.raises(ValueError, match='Cannot use .*bad_arch.pth: its "arch" entry'):
        bundle_weights(str(tmp_path / 'bad_arch.pth'), str(tmp_path / 'out2.pth'), str(tmp_path / 'train.yml'))
    assert not (tmp_path / 'out2.pth').exists()


def test_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch):
    from dsmnet_arch.checkpoint import atomic_save

    target = tmp_path / 'net_g_latest.pth'
    atomic_save({'params': {'w': torch.ones(3)}}, target)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 half a checkpoint')
        raise KeyboardInterrupt  # stands for the process being killed during the write

    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'params': {'w': torch.zeros(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)['params']['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['net_g_latest.pth']
