"""dsmnet_arch/archs/dsmnet_arch.py with torch alone, as BasicSR's forks (Restormer, DRSformer, NAFNet) load it."""
import os
import textwrap

import pytest
import torch

from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import REPO, run_entry

pytestmark = pytest.mark.slow  # each test runs the architecture file in a fresh interpreter

ARCH_FILE = os.path.join(REPO, 'dsmnet_arch', 'archs', 'dsmnet_arch.py')
NETWORK = dict(num_feat=8, num_levels=3, num_subspaces=4)

# Run in a fresh process: makes every import of basicsr fail, loads the architecture file by its path
# (not through the package dsmnet_arch, whose __init__ imports basicsr), builds DSMNet, runs a forward
# pass in eval mode with the given weights and a training step, and saves the eval output.
WITHOUT_BASICSR = textwrap.dedent('''
    import ast, importlib.abc, importlib.util, sys

    class NoBasicSR(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split('.')[0] == 'basicsr':
                raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)', name=name)

    sys.meta_path.insert(0, NoBasicSR())
    import torch
    torch.set_num_threads(1)
    arch_file, weights, inputs, outputs = sys.argv[1:5]
    network = ast.literal_eval(sys.argv[5])
    spec = importlib.util.spec_from_file_location('fork_dsmnet_arch', arch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ARCH_REGISTRY is None
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('basicsr', 'dsmnet_arch'))
    assert not loaded, loaded

    net = module.DSMNet(**network)
    net.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        torch.save(net.eval()(torch.load(inputs, weights_only=True)), outputs)
    net.train()(torch.rand(2, 3, 16, 16)).mean().backward()  # BatchNorm in train mode, gradients
    assert all(p.grad is not None for p in net.parameters())
''')

# A fork's own basicsr: no basicsr.utils.registry; basicsr/models/archs/ imports every *_arch.py in
# it and finds an options file's type: by class name, the way Restormer's and NAFNet's scanners do.
FORK_SCANNER = textwrap.dedent('''
    """This test's fork scanner: imports every *_arch.py here, finds ``type:`` as a class of them."""
    import importlib
    import os

    _names = sorted(name[:-3] for name in os.listdir(os.path.dirname(__file__)) if name.endswith('_arch.py'))
    _modules = [importlib.import_module(f'{__name__}.{name}') for name in _names]


    def define_network(opt):
        opt = dict(opt)
        name = opt.pop('type')
        return next(getattr(m, name) for m in _modules if hasattr(m, name))(**opt)
''')
IN_FORK = textwrap.dedent('''
    import ast, importlib.util, sys
    import torch
    from basicsr.models.archs import define_network
    assert importlib.util.find_spec('basicsr.utils.registry') is None and 'dsmnet_arch' not in sys.modules
    net = define_network(dict(type='DSMNet', **ast.literal_eval(sys.argv[1]))).eval()
    print(type(net).__module__, tuple(net(torch.rand(1, 3, 21, 19)).shape))
''')


def test_architecture_file_builds_and_runs_where_basicsr_cannot_be_imported(tmp_path):
    torch.manual_seed(0)
    net = DSMNet(**NETWORK).eval()
    x = torch.rand(2, 3, 37, 29)
    torch.save(net.state_dict(), tmp_path / 'weights.pth')
    torch.save(x, tmp_path / 'x.pt')
    proc = run_entry(['-c', WITHOUT_BASICSR, ARCH_FILE, str(tmp_path / 'weights.pth'), str(tmp_path / 'x.pt'),
                      str(tmp_path / 'y.pt'), repr(NETWORK)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with torch.no_grad():
        expected = net(x)
    assert torch.equal(torch.load(tmp_path / 'y.pt', weights_only=True), expected)  # the package's own DSMNet


def test_fork_scanner_finds_dsmnet_by_class_name(tmp_path):
    archs = tmp_path / 'fork' / 'basicsr' / 'models' / 'archs'
    archs.mkdir(parents=True)
    for package in (archs.parents[1], archs.parents[1] / 'utils', archs.parent):
        package.mkdir(exist_ok=True)
        (package / '__init__.py').write_text('')
    (archs / '__init__.py').write_text(FORK_SCANNER)
    (archs / 'dsmnet_arch.py').symlink_to(ARCH_FILE)  # docs/forks.md, step 2
    proc = run_entry(['-c', IN_FORK, repr(NETWORK)], cwd=tmp_path / 'fork')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.split('\n')[0] == 'basicsr.models.archs.dsmnet_arch (1, 3, 21, 19)'
