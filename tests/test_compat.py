"""dsmnet_arch.compat: each remaining global patch, shown necessary by the failure of what it replaces,
and BasicSR's model classes left as BasicSR wrote them (DerainModel overrides what is its own); the
resume patch itself: which training state a resumed run picks, and how it is loaded."""
import collections
import copy
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import dsmnet_arch  # noqa: F401  (applies the fixes)
from dsmnet_arch import compat
from dsmnet_arch.checkpoint import load_checkpoint
from dsmnet_arch.compat import _resume_state_path

import basicsr.train
from basicsr.models.base_model import BaseModel
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr.models.sr_model import SRModel
from basicsr.utils import dist_util


def test_basicsrs_model_classes_are_left_as_basicsr_wrote_them():
    """Loading, placement and validation are DerainModel's overrides, not patches of every model."""
    assert BaseModel.load_network.__module__ == 'basicsr.models.base_model'
    assert BaseModel.model_to_device.__module__ == 'basicsr.models.base_model'
    assert SRModel.test.__module__ == 'basicsr.models.sr_model'


@pytest.mark.slow  # a fresh interpreter importing BasicSR: 14 s on 2 cores
def test_importing_the_architecture_file_alone_changes_no_model():
    code = ('import dsmnet_arch.archs.dsmnet_arch; from basicsr.models.sr_model import SRModel; '
            'from basicsr.models.base_model import BaseModel; '
            'print(SRModel.test.__module__, BaseModel.load_network.__module__, BaseModel.model_to_device.__module__)')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['basicsr.models.sr_model'] + ['basicsr.models.base_model'] * 2


def test_exactly_the_documented_functions_are_replaced():
    assert set(compat.ORIGINALS) == {'basicsr.train.load_resume_state', 'basicsr.utils.dist_util._init_dist_pytorch',
                                     'basicsr.utils.dist_util._init_dist_slurm'}
    assert basicsr.train.load_resume_state.__module__ == dist_util._init_dist_pytorch.__module__ == 'dsmnet_arch.compat'


@pytest.mark.slow  # two fresh interpreters importing BasicSR: 15 s
def test_without_the_functional_tensor_alias_basicsr_does_not_import():
    import torchvision.transforms
    if os.path.exists(os.path.join(os.path.dirname(torchvision.transforms.__file__), 'functional_tensor.py')):
        pytest.skip('this torchvision still has transforms.functional_tensor: the alias is not needed')
    proc = subprocess.run([sys.executable, '-c', 'import basicsr'], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "No module named 'torchvision.transforms.functional_tensor'" in proc.stderr
    proc = subprocess.run([sys.executable, '-c', 'import dsmnet_arch, basicsr'], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_training_states_load_weights_only_without_an_allow_list(tmp_path):
    """Why no patch allow-lists ``collections.Counter`` (BasicSR's MultiStepLR milestones) any more: torch's
    weights-only unpickler allows it by itself, with no safe globals added."""
    net = torch.nn.Linear(1, 1)
    scheduler = MultiStepRestartLR(torch.optim.Adam(net.parameters()), milestones=[10, 20])
    torch.save({'schedulers': [scheduler.state_dict()]}, tmp_path / 'x.state')
    assert collections.Counter not in torch.serialization.get_safe_globals()
    state = torch.load(tmp_path / 'x.state', weights_only=True)
    assert state['schedulers'][0]['milestones'] == collections.Counter([10, 20])


def test_basicsrs_resume_fails_on_the_cpu_or_leaves_the_states_experiment(tmp_path, monkeypatch):
    """BasicSR's ``load_resume_state`` maps the state to CUDA (an error without a GPU); with a GPU it
    loads, but the run goes on in a new experiment folder without the state's weights."""
    states = tmp_path / 'old' / 'run' / 'training_states'
    states.mkdir(parents=True)
    torch.save(dict(epoch=1, iter=4, optimizers=[], schedulers=[]), states / '4.state')
    monkeypatch.chdir(tmp_path)
    experiment = str(tmp_path / 'old' / 'run')

    def models_folder(load_resume_state):
        opt = dict(name='run', auto_resume=False, network_g={'type': 'DSMNet'},
                   path=dict(resume_state=str(states / '4.state'), experiments_root='experiments/run',
                             models='experiments/run/models'))
        try:
            load_resume_state(opt)
        except (RuntimeError, AssertionError) as err:  # no NVIDIA driver / torch without CUDA
            return f'{type(err).__name__}: {err}'
        return opt['path']['models']

    assert models_folder(compat.ORIGINALS['basicsr.train.load_resume_state']) != os.path.join(experiment, 'models')
    assert models_folder(basicsr.train.load_resume_state) == os.path.join(experiment, 'models')


@pytest.mark.parametrize('launcher', ['pytorch', 'slurm'])
def test_basicsrs_distributed_init_fails_without_gpus(monkeypatch, launcher):
    """On a machine without GPUs (stood in for) BasicSR divides by the GPU count; the fix takes gloo."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    monkeypatch.setattr(subprocess, 'getoutput', lambda command: 'node0')
    for name, value in dict(RANK='1', LOCAL_RANK='1', SLURM_PROCID='1', SLURM_NTASKS='2', SLURM_NODELIST='node0',
                            MASTER_ADDR='', MASTER_PORT='', WORLD_SIZE='2').items():
        monkeypatch.setenv(name, value)
    backends = []
    monkeypatch.setattr(dist, 'init_process_group', lambda backend, **kwargs: backends.append(backend))
    name = f'basicsr.utils.dist_util._init_dist_{launcher}'
    with pytest.raises(ZeroDivisionError):
        compat.ORIGINALS[name]('nccl')
    assert backends == []
    getattr(dist_util, f'_init_dist_{launcher}')('nccl')
    assert backends == ['gloo']


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
