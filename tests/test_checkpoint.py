"""dsmnet_arch.checkpoint and BasicSR's loading through it: untrusted files, where the weights are,
the recorded arguments, and which training state a resumed run picks."""
import os

import pytest
import torch

import dsmnet_arch  # noqa: F401  (applies the BasicSR fixes)
from basicsr.models.base_model import BaseModel
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import arch_from_checkpoint, arch_record, load_checkpoint, state_dict_from_checkpoint
from dsmnet_arch.compat import _resume_state_path

TINY = dict(num_feat=8, num_levels=2, num_subspaces=4)


def tiny(seed):
    torch.manual_seed(seed)
    return DSMNet(**TINY)


def same_weights(net, state):
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'Checkpoint file not found: {tmp_path / "none.pth"}$'):
        load_checkpoint(tmp_path / 'none.pth')
    torch.save({'params': tiny(0).state_dict()}, tmp_path / 'w.pth')
    (tmp_path / 'cut.pth').write_bytes((tmp_path / 'w.pth').read_bytes()[:3000])
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / 'cut.pth')
    assert str(err.value).startswith(f'Cannot load checkpoint {tmp_path / "cut.pth"}: not a readable PyTorch checkpoint')
    assert len(str(err.value).splitlines()) == 1


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
    record = arch_record({'type': 'DSMNet', 'num_feat': 8, 'mab_variant': 'M4', 'kernel_sizes': (1, 3)}, DSMNet)
    assert record == dict(type='DSMNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=4, kernel_sizes=[1, 3],
                          dilated=False, attention='ca+sa', num_subspaces=8, reduction=4, mab_variant='M4',
                          level_down=True, level_up=True, level_dense=True)
    arch_type, args = arch_from_checkpoint({'params': {}, 'arch': record}, 'f')
    assert arch_type == 'DSMNet' and DSMNet(**args).mab['0_0'].across_down is False
    assert arch_from_checkpoint({'params': {}}, 'f') is None and arch_from_checkpoint([], 'f') is None
    for bad in ({'num_feat': 8}, {'type': 3}, 'DSMNet', {'type': 'DSMNet', 1: 2}):
        with pytest.raises(ValueError, match='Cannot use f: its "arch" entry is not a network type with arguments'):
            arch_from_checkpoint({'arch': bad}, 'f')


def basicsr_model():
    return BaseModel({'num_gpu': 0, 'is_train': False, 'dist': False})


def test_basicsr_load_network_prefers_params_ema_and_drops_the_prefix(tmp_path):
    ema, plain = tiny(1).state_dict(), tiny(2).state_dict()
    torch.save({'params': {f'module.{k}': v for k, v in plain.items()}, 'params_ema': ema}, tmp_path / 'both.pth')
    torch.save({'params': plain}, tmp_path / 'plain.pth')
    net = tiny(3)
    basicsr_model().load_network(net, str(tmp_path / 'both.pth'), True, 'params_ema')
    assert same_weights(net, ema)
    basicsr_model().load_network(net, str(tmp_path / 'both.pth'), True, 'params')
    assert same_weights(net, plain)
    basicsr_model().load_network(net, str(tmp_path / 'plain.pth'), True, 'params_ema')  # falls back to params
    assert same_weights(net, plain)


def test_basicsr_load_network_names_the_file_that_does_not_fit(tmp_path):
    torch.save({'params': DSMNet(num_feat=16, num_levels=2, num_subspaces=4).state_dict()}, tmp_path / 'wide.pth')
    with pytest.raises(ValueError, match=f'Weights in {tmp_path / "wide.pth"} do not fit DSMNet: Error'):
        basicsr_model().load_network(tiny(0), str(tmp_path / 'wide.pth'), True, 'params')
    with pytest.raises(FileNotFoundError, match='Checkpoint file not found: .*nothing.pth'):
        basicsr_model().load_network(tiny(0), str(tmp_path / 'nothing.pth'), True, 'params')


def test_auto_resume_takes_the_newest_state_by_iteration(tmp_path):
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    states.mkdir(parents=True)
    for name in ('9.state', '10.state', '2.state', 'notes.txt', 'latest.state', '11.state.tmp'):
        (states / name).write_bytes(b'')
    opt = {'auto_resume': True, 'root_path': str(tmp_path), 'name': 'run', 'path': {'resume_state': None}}
    assert _resume_state_path(opt) == os.path.join(str(states), '10.state')  # by number, not by name
    assert _resume_state_path(dict(opt, name='other')) is None  # nothing to resume: a fresh start
    explicit = {'auto_resume': False, 'path': {'resume_state': 'given.state'}}
    assert _resume_state_path(explicit) == 'given.state'
