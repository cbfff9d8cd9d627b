"""dsmnet_arch.compat: each remaining global patch, shown necessary by the failure of what it replaces,
and BasicSR's model classes left as BasicSR wrote them (DerainModel overrides what is its own)."""
import collections
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

import dsmnet_arch  # noqa: F401  (applies the fixes)
from dsmnet_arch import compat

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
