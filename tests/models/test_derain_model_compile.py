"""torch.compile on the CPU: train: compile computes what the eager network does (dsmnet-derain --compile:
tests/test_infer.py).

Inductor compiles a DSMNet into C++ kernels with the system's compiler, which takes about 40 s on a
2-core machine even for the smallest network: one test does that (one kernel size, one level); the
others compile with the ``aot_eager`` backend (Dynamo's graph capture and AOT autograd, no code
generation), which checks the wiring (graph capture without breaks, wrapper, checkpoint keys) in seconds.
"""
import copy
import shutil

import numpy as np
import pytest
import torch

import dsmnet_arch  # noqa: F401
from dsmnet_arch.archs.dsmnet_arch import DSMNet

from conftest import NETWORK, batch, derain_model, randomised

NO_COMPILER = not any(shutil.which(cxx) for cxx in ('g++', 'c++', 'clang++'))


@pytest.mark.slow  # inductor compiles C++: about 40 s without its cache
@pytest.mark.skipif(NO_COMPILER, reason='torch.compile (inductor) on the CPU needs a C++ compiler; none on PATH')
def test_inductor_training_step_equals_eager():
    """Outputs, every parameter's gradient and the BatchNorm statistics, in one graph (fullgraph)."""
    torch.manual_seed(0)
    net = randomised(DSMNet(num_feat=8, num_levels=1, num_subspaces=4, kernel_sizes=(3, ), attention='sa')).train()
    eager = copy.deepcopy(net)
    x, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out, expected = torch.compile(net, fullgraph=True)(x), eager(x)
    assert (out - expected).abs().max() < 1e-5  # measured 1e-7
    torch.nn.functional.mse_loss(out, target).backward()
    torch.nn.functional.mse_loss(expected, target).backward()
    for (key, p), q in zip(net.named_parameters(), eager.parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        assert (p.grad - q.grad).abs().max() / scale < 1e-4, key  # measured under 1e-6
    for (key, b), c in zip(net.named_buffers(), eager.buffers()):
        assert torch.allclose(b.float(), c.float(), atol=1e-6), key


@pytest.mark.slow  # graph capture of two models: 5 s
def test_compiled_derain_model_trains_as_eager_and_saves_plain_weights(tmp_path):
    """train: compile: the whole network in one graph, the same losses as eager, and checkpoints that an
    eager DSMNet loads (no ``_orig_mod.`` prefix)."""
    compiled = derain_model(compile=dict(backend='aot_eager', fullgraph=True))
    eager = derain_model()
    assert isinstance(compiled.net_g, torch._dynamo.eval_frame.OptimizedModule)
    bare = compiled.get_bare_model(compiled.net_g)
    assert type(bare) is DSMNet and bare is compiled.net_g._orig_mod
    losses = {}
    for name, model in (('compiled', compiled), ('eager', eager)):
        model.feed_data(batch())
        losses[name] = []
        for it in range(1, 4):
            model.optimize_parameters(it)
            losses[name].append(model.log_dict['l_pix'])
    assert np.allclose(losses['compiled'], losses['eager'], rtol=1e-5, atol=0), losses
    assert losses['compiled'][-1] < losses['compiled'][0]

    compiled.opt['path']['models'] = str(tmp_path)
    compiled.save_network(compiled.net_g, 'net_g', 3)
    saved = torch.load(tmp_path / 'net_g_3.pth', weights_only=True)
    assert list(saved['params']) == list(DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'}).state_dict())
    loaded = DSMNet(**{k: v for k, v in NETWORK.items() if k != 'type'})
    loaded.load_state_dict(saved['params'])
    x = batch()['lq']
    compiled.feed_data({'lq': x})
    compiled.test()  # validation: the network itself, eagerly, in eval mode
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), compiled.output)


def test_compile_option_errors_name_the_option():
    with pytest.raises(ValueError, match=r'train:compile must be true, false or a mapping .* got bogus$'):
        derain_model(compile=dict(mode='default', bogus=1))
