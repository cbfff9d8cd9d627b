"""dsmnet_arch.checkpoint and DerainModel's loading through it: untrusted files, where the weights are,
the recorded arguments, and which training state a resumed run picks."""
import copy
import os
import re
import stat

import pytest
import torch

import dsmnet_arch  # noqa: F401  (applies the BasicSR fixes)
from dsmnet_arch import compat
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import (
    arch_from_checkpoint,
    arch_record,
    atomic_save,
    load_checkpoint,
    state_dict_from_checkpoint,
)
from dsmnet_arch.compat import _resume_state_path

import basicsr.train

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


@pytest.fixture
def load_resume_state(monkeypatch):
    """BasicSR's ``load_resume_state`` as patched by dsmnet_arch.compat, patched afresh in this process."""
    monkeypatch.setattr(basicsr.train, 'load_resume_state', basicsr.train.load_resume_state)  # restored after
    compat._patch_resume_state()
    return basicsr.train.load_resume_state


def write_state(folder, name='4.state', **content):
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(epoch=1, iter=4, optimizers=[{'state': {0: {'step': torch.tensor(4.)}}}], schedulers=[{}])
    torch.save({**state, **content}, folder / name)
    return folder / name


def resume_options(resume_state, auto_resume=False, **extra):
    return dict(name='run', auto_resume=auto_resume, network_g={'type': 'DSMNet'}, **extra,
                path=dict(resume_state=resume_state, pretrain_network_g='elsewhere/net_g_99.pth',
                          param_key_g='params_ema', experiments_root='experiments/run', models='run/models'))


def test_resume_state_given_by_a_relative_path_continues_in_its_experiment(tmp_path, monkeypatch, load_resume_state):
    write_state(tmp_path / 'old' / 'run' / 'training_states')
    monkeypatch.chdir(tmp_path / 'old')
    opt = resume_options(os.path.join('run', 'training_states', '4.state'))
    state = load_resume_state(opt)
    assert (state['epoch'], state['iter']) == (1, 4)
    assert state['optimizers'][0]['state'][0]['step'].device == torch.device('cpu')  # load_state_dict places it
    experiment = str(tmp_path / 'old' / 'run')
    assert opt['path'] == dict(resume_state=os.path.join('run', 'training_states', '4.state'),
                               experiments_root=experiment, log=experiment, models=os.path.join(experiment, 'models'),
                               training_states=os.path.join(experiment, 'training_states'),
                               visualization=os.path.join(experiment, 'visualization'),
                               pretrain_network_g=os.path.join(experiment, 'models', 'net_g_4.pth'),
                               param_key_g='params')  # BasicSR's check_resume: the weights of iteration 4


def test_auto_resume_loads_the_newest_state_and_records_its_path(tmp_path, load_resume_state):
    states = tmp_path / 'experiments' / 'run' / 'training_states'
    write_state(states, '2.state', iter=2)
    write_state(states, '10.state', epoch=3, iter=10)
    opt = resume_options(None, auto_resume=True, root_path=str(tmp_path))
    state = load_resume_state(opt)
    assert state['iter'] == 10 and opt['path']['resume_state'] == str(states / '10.state')
    assert opt['path']['pretrain_network_g'] == str(tmp_path / 'experiments' / 'run' / 'models' / 'net_g_10.pth')
    assert load_resume_state(resume_options(None, auto_resume=True, root_path=str(tmp_path / 'none'))) is None


def test_no_resume_state_is_a_fresh_start(load_resume_state):
    opt = resume_options(None)
    before = copy.deepcopy(opt)
    assert load_resume_state(opt) is None and opt == before


@pytest.mark.parametrize('missing', ['epoch', 'iter', 'optimizers', 'schedulers', 'not a dict'])
def test_a_file_that_is_not_a_training_state_is_refused_by_name(tmp_path, load_resume_state, missing):
    if missing == 'not a dict':
        torch.save([1, 2], tmp_path / 'x.state')
    else:
        state = dict(epoch=1, iter=4, optimizers=[], schedulers=[])
        del state[missing]
        torch.save(state, tmp_path / 'x.state')
    message = (f'Cannot resume from {tmp_path / "x.state"}: not a BasicSR training state (expected the keys "epoch", '
               '"iter", "optimizers", "schedulers")')
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        load_resume_state(resume_options(str(tmp_path / 'x.state')))


def test_exactly_the_four_keys_are_a_training_state(tmp_path, load_resume_state):
    torch.save(dict(epoch=0, iter=7, optimizers=[], schedulers=[]), tmp_path / '7.state')
    assert load_resume_state(resume_options(str(tmp_path / '7.state')))['iter'] == 7


def test_auto_resume_without_root_path_looks_under_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / 'experiments' / 'run' / 'training_states').mkdir(parents=True)
    (tmp_path / 'experiments' / 'run' / 'training_states' / '3.state').write_bytes(b'')
    monkeypatch.chdir(tmp_path)
    opt = {'auto_resume': True, 'name': 'run', 'path': {'resume_state': None}}
    assert _resume_state_path(opt) == os.path.join('.', 'experiments', 'run', 'training_states', '3.state')


def test_training_states_load_onto_the_cpu_whatever_device_saved_them(tmp_path, monkeypatch, load_resume_state):
    """The optimizers' load_state_dict then places each tensor (Adam's step counters stay on the CPU)."""
    write_state(tmp_path / 'run' / 'training_states')
    calls = []

    def recording_load(path, **kwargs):
        calls.append(kwargs)
        return load_checkpoint(path, **kwargs)

    monkeypatch.setattr(compat, 'load_checkpoint', recording_load)
    load_resume_state(resume_options(str(tmp_path / 'run' / 'training_states' / '4.state')))
    assert calls == [{'map_location': 'cpu'}]


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
