"""dsmnet_arch.benchmarks.compare: another version's architecture file timed against this one, call by call."""
import sys

import pytest
import torch

from dsmnet_arch.archs import dsmnet_arch
from dsmnet_arch.benchmarks.compare import compare, load_arch, main


def test_load_arch_gives_a_separate_unregistered_module():
    module = load_arch(dsmnet_arch.__file__)
    assert module is not dsmnet_arch and module.DSMNet is not dsmnet_arch.DSMNet
    assert module.ARCH_REGISTRY is None  # loaded without BasicSR's registry, which holds the package's DSMNet
    assert sys.modules['basicsr.utils.registry'].ARCH_REGISTRY.get('DSMNet') is dsmnet_arch.DSMNet
    torch.manual_seed(0)
    ours = dsmnet_arch.DSMNet(num_feat=8, num_levels=2, num_subspaces=2).eval()
    theirs = module.DSMNet(num_feat=8, num_levels=2, num_subspaces=2).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize('train', [False, True])
def test_compare_times_both_in_turn(train):
    times = compare(dsmnet_arch.__file__, rounds=2, train=train, side=16, batch=2, num_feat=8)
    assert set(times) == {'other', 'this'} and all(len(v) == 2 and min(v) > 0 for v in times.values())


def test_main_prints_a_table(capsys):
    main([dsmnet_arch.__file__, '--rounds', '1', '--side', '16', '--num-feat', '8'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '| inference, 1 x 3 x 16 x 16, fp32 | median | least |'
    assert lines[2].startswith(f'| {dsmnet_arch.__file__} | ') and lines[3].startswith('| this checkout | ')
    assert lines[4].startswith('| this / other | ')
