"""The optimised DSMNet computes what the straightforward implementation of the spec computes.

``reference_forward`` below is DSMNet's forward pass as it was first written, straight from the
spec: contiguous (NCHW) tensors, no in-place operation, subspace attention through reshapes and
``softmax``. It runs on the modules (and so the state dict) of the model under test. The model now
computes in channels-last memory format, activates and accumulates in place and frees
intermediates early; outputs, gradients, BatchNorm statistics and FLOPs must not change.
"""
import collections
import contextlib
import copy

import pytest
import torch
from torch.nn import functional as F
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import dsmnet_arch  # noqa: F401
from dsmnet_arch.archs import dsmnet_arch as arch
from dsmnet_arch.archs.dsmnet_arch import DSMNet, _max_pool3x3

from conftest import channels_last_by_block, randomised


def act(x):
    return F.leaky_relu(x, 0.2)


def channel_attention(m, x):
    return x * torch.sigmoid(m.mlp(F.adaptive_avg_pool2d(x, 1)) + m.mlp(F.adaptive_max_pool2d(x, 1)))


def spatial_attention(m, x):
    return x * torch.sigmoid(m.conv(torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)))


def subspace_attention(m, x):
    b, c, h, w = x.shape
    n = m.num_subspaces
    a = F.relu(m.bn_dw(m.dw(x)))
    a = F.max_pool2d(a, 3, stride=1, padding=1)
    a = F.relu(m.bn_pw(m.pw(a)))
    a = a.reshape(b, n, 1, h * w).softmax(-1)
    x = x.reshape(b, n, c // n, h * w)
    return (x * a + x).reshape(b, c, h, w)


BRANCHES = {'ca': channel_attention, 'sp': spatial_attention, 'sa': subspace_attention}


def cadb(m, x):
    return m.conv(torch.cat([BRANCHES[name](getattr(m, name), x) for name in m.branches], 1)) + x


# Paper Table 5 as (Across-Down, Across-Up, Dense-Fusion), written out here, not taken from the model
TABLE_5 = {'M1': (False, False, False), 'M2': (True, True, False), 'M3': (True, False, True),
           'M4': (False, True, True), 'M5': (True, True, True)}


def cross(xs, kernels, down, up):
    """The spec's cross(X)^k of every branch, spelled out: X^k, plus the smaller kernels' X^k' with
    Across-Down, plus the larger kernels' with Across-Up."""
    out = []
    for k, x in zip(kernels, xs):
        total = x
        for k2, y in zip(kernels, xs):
            if (k2 < k and down) or (k2 > k and up):
                total = total + y
        out.append(total)
    return out


def mab(m, x, variant, res_scale=1.0):
    down, up, dense = TABLE_5[variant]
    kernels = [conv.dilation[0] * (conv.kernel_size[0] - 1) + 1 for conv in m.conv_a.values()]  # k, dilated or not
    f_a = [act(conv(x)) for conv in m.conv_a.values()]  # eq. 2-4
    f_b = [act(conv(s)) for conv, s in zip(m.conv_b.values(), cross(f_a, kernels, down, up))]  # eq. 5-7
    f_c = []
    for conv, s, a in zip(m.conv_c.values(), cross(f_b, kernels, down, up), f_a):  # eq. 8-10
        f_c.append(act(conv(s + a)) + a if dense else act(conv(s)))
    return res_scale * cadb(m.cadb, m.conv_fuse(m.conv_cat(torch.cat(f_c, 1)))) + x  # eq. 11, branch scaled


def fusion(m, feats):
    return cadb(m.cadb, act(m.conv(torch.cat(feats, 1))))


def reference_forward(net, x, num_levels=4, mab_variant='M5', level_down=True, level_up=True, level_dense=True,
                      res_scale=1.0, **unused):
    """DSMNet's forward pass written out from the spec, on ``net``'s modules; the wiring comes from
    the keyword arguments (those ``net`` was built with), not from ``net``.

    The triangle, column by column: M(i, 0) takes S_i (and, with level_down, the pooled M(i-1, 0));
    M(i, j), j >= 1, takes M(i, 0..j-1) with level_dense or M(i, j-1) without, and with level_up the
    upsampled M(i+1, j-1). Without level_up only level 0 is built.
    """
    h, w = x.shape[-2:]
    multiple = 2**(num_levels - 1)
    x = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode='reflect')
    scales = [act(net.conv_first(x))]
    for _ in range(1, num_levels):
        scales.append(F.avg_pool2d(scales[-1], 2))
    out = {}
    for j in range(num_levels):
        for i in range(num_levels - j if level_up else 1):
            if j == 0:
                feat = scales[i]
                if level_down and i > 0:
                    feat = fusion(net.down[f'{i}'], [F.avg_pool2d(out[i - 1, 0], 2), feat])
            else:
                feats = [out[i, c] for c in range(j)] if level_dense else [out[i, j - 1]]
                if level_up:
                    size = out[i, 0].shape[-2:]
                    feats.append(F.interpolate(out[i + 1, j - 1], size=size, mode='bilinear', align_corners=False))
                feat = fusion(net.fuse[f'{i}_{j}'], feats)
            out[i, j] = mab(net.mab[f'{i}_{j}'], feat, mab_variant, res_scale)
    rain = net.conv_last(fusion(net.head, [out[0, j] for j in range(num_levels)]))
    return (x - rain)[..., :h, :w]


SMALL = dict(num_feat=16, num_levels=3, num_subspaces=4)
CONFIGS = {
    'default-16': dict(num_feat=16),
    **{f'attention={a}': dict(SMALL, attention=a) for a in ('ca', 'sp', 'sa', 'ca+sp', 'sp+sa')},
    **{name: dict(SMALL, mab_variant=name) for name in TABLE_5 if name != 'M5'},
    **{f'{link} off': dict(SMALL, **{link: False}) for link in ('level_down', 'level_up', 'level_dense')},
    'no level links, M2': dict(SMALL, level_down=False, level_up=False, level_dense=False, mab_variant='M2'),
    'dilated, kernels 1-3-7': dict(SMALL, dilated=True, kernel_sizes=(1, 3, 7)),
    'res_scale=0.1': dict(SMALL, res_scale=0.1),
    'one kernel size, 1 level': dict(num_feat=8, num_levels=1, num_subspaces=2, kernel_sizes=(3, )),
}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_eval_outputs_equal_reference(name):
    torch.manual_seed(0)
    net = randomised(DSMNet(**CONFIGS[name])).eval()
    x = torch.rand(2, 3, 21, 26)
    with torch.no_grad():
        expected = reference_forward(net, x, **CONFIGS[name])
        out = net(x)
    assert out.shape == x.shape and out.is_contiguous()
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.parametrize('name', list(CONFIGS))
def test_training_step_equals_reference(name):
    """Train mode: same output, same gradient for every parameter, same BatchNorm statistics."""
    torch.manual_seed(0)
    net = randomised(DSMNet(**CONFIGS[name])).train()
    ref = copy.deepcopy(net)
    x, target = torch.rand(2, 3, 24, 20), torch.rand(2, 3, 24, 20)
    out, expected = net(x), reference_forward(ref, x, **CONFIGS[name])
    assert (out - expected).abs().max() < 1e-5
    F.mse_loss(out, target).backward()
    F.mse_loss(expected, target).backward()
    for (key, p), q in zip(net.named_parameters(), ref.parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        assert (p.grad - q.grad).abs().max() / scale < 1e-5, key
    for (key, b), c in zip(net.named_buffers(), ref.buffers()):
        assert torch.allclose(b.float(), c.float(), atol=1e-6), key


def test_channels_last_input_and_batch_one():
    torch.manual_seed(0)
    net = randomised(DSMNet(**SMALL)).eval()
    x = torch.rand(1, 3, 19, 17)
    with torch.no_grad():
        expected = reference_forward(net, x, **SMALL)
        out = net(x.contiguous(memory_format=torch.channels_last))
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.parametrize('batch', [1, 2])
def test_every_block_stays_channels_last(batch):
    """The memory format survives every block, for a batch of one too (the usual inference case).

    A block that hands on a tensor PyTorch no longer takes for channels-last (a batch stride the
    convolutions do not recognise, say) silently switches the rest of the network to NCHW.
    """
    torch.manual_seed(0)
    net = DSMNet(**SMALL).eval()
    with torch.no_grad():
        formats = channels_last_by_block(net, torch.rand(batch, 3, 16, 16))
    assert len(formats) > 50 and [name for name, ok in formats.items() if not ok] == []


def flops(fn, *args):
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize('train', [False, True])
def test_flops_equal_reference(train):
    """No optimisation adds or drops arithmetic: GFLOP/s figures mean the spec's FLOPs."""
    with torch.device('meta'):
        net = DSMNet(num_feat=16).train(train)
        x = torch.empty(2, 3, 32, 32)

    def run(forward):
        with torch.set_grad_enabled(train):
            out = forward(x)
            if train:
                out.sum().backward()

    assert flops(run, net) == flops(run, lambda t: reference_forward(net, t, num_feat=16)) > 0


def test_subspace_softmax_of_large_and_unequal_maps():
    # the softmax over each map's positions must not overflow on large maps, nor underflow on a map far
    # below another one: maps near 0 and near 200 here (exp(200) overflows float32, exp(-200) is 0)
    torch.manual_seed(0)
    m = DSMNet(num_feat=8, num_levels=1, num_subspaces=2).mab['0_0'].cadb.sa.eval()
    with torch.no_grad():
        m.bn_pw.bias.copy_(torch.tensor([0., 200.]))
        x = torch.rand(2, 8, 6, 7)
        out, expected = m(x), subspace_attention(m, x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


Counted = collections.namedtuple('Counted', 'fused plain')


def count_convolutions(net, x):
    """oneDNN's fused convolutions and plain ones in one call of ``net`` (PyTorch's profiler, which unlike a
    dispatch mode leaves the network's choice alone), after a first call outside it."""
    net(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    calls = collections.Counter({event.key: event.count for event in prof.key_averages()})
    return Counted(calls['mkldnn::_convolution_pointwise'] + calls['mkldnn::_convolution_pointwise_'],
                   calls['aten::convolution'])


def dtypes_by_block(net, x, grad_mode):
    """The output dtype of every MAB, CADB, fusion block and subspace attention of ``net`` under a bfloat16
    autocast (hooks on these blocks leave the convolutions inside them fused)."""
    dtypes, handles = {}, []
    for name, module in net.named_modules():
        if isinstance(module, (arch.MAB, arch.CADB, arch.FusionBlock, arch.SubspaceAttention)):
            handles.append(module.register_forward_hook(
                lambda m, args, out, name=name: dtypes.__setitem__(name, out.dtype)))
    with grad_mode, torch.autocast('cpu', dtype=torch.bfloat16):
        net(x)
    for handle in handles:
        handle.remove()
    return dtypes


def test_cpu_inference_fuses_convolutions_only_where_it_may():
    """CPU inference runs oneDNN's fused convolutions (most of them), in float32 and under a bfloat16 autocast;
    autograd and a forward hook on a convolution get the plain ones, with the same outputs."""
    torch.manual_seed(0)
    net = randomised(DSMNet(**SMALL)).eval()
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        fused = count_convolutions(net, x)
        out = net(x)
    assert fused.fused > 2 * fused.plain > 0
    with torch.enable_grad():
        assert count_convolutions(net, x).fused == 0
        assert (net(x) - out).abs().max() < 1e-5
    with torch.autocast('cpu', dtype=torch.bfloat16):
        plain_bf16 = net(x).detach()
        with torch.no_grad():
            counted = count_convolutions(net, x)
            out_bf16 = net(x)
    assert (counted.fused, counted.plain) == (fused.fused, fused.plain)
    # and in the dtypes autocast gives the plain path: every block's output in bfloat16
    assert dtypes_by_block(net, x, torch.no_grad()) == dtypes_by_block(net, x, torch.enable_grad())
    assert set(dtypes_by_block(net, x, torch.no_grad()).values()) == {torch.bfloat16}
    # bfloat16 keeps 8 bits: both bf16 outputs near float32's, and near each other (the fused one rounds less)
    assert out_bf16.dtype == plain_bf16.dtype == torch.float32  # B = I - R: the float32 input minus R
    error, plain_error = (out_bf16 - out).abs().max(), (plain_bf16 - out).abs().max()
    assert 0 < error < 0.05 and 0 < plain_error < 0.05 and (out_bf16 - plain_bf16).abs().max() < 0.05
    conv = net.mab['0_0'].conv_a['k3']
    calls = []
    handle = conv.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.no_grad():
        hooked = count_convolutions(net, x)
    handle.remove()
    assert calls == [(1, 16, 20, 20)] * 2 and hooked.fused == fused.fused - 1 and hooked.plain == fused.plain + 1


@pytest.mark.parametrize('setting', ['oneDNN off', 'global hook', 'global pre-hook', 'tracing', 'compiling',
                                     'dispatch mode', 'float64', 'fp16 autocast', 'trial failed'])
def test_no_fused_convolutions_where_they_would_be_wrong(setting, monkeypatch):
    """oneDNN disabled by the user, a global forward hook (convolutions must run as modules to call it), tracing
    (ONNX export), compiling and a dispatch mode (FlopCounterMode, which counts aten's convolutions) get plain
    convolutions; so do float64 tensors, an autocast to float16 and a build whose oneDNN fails the one-time trial."""
    torch.manual_seed(0)
    net = randomised(DSMNet(**SMALL)).eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        expected = net(x)
    context, calls = contextlib.nullcontext(), []
    if setting == 'oneDNN off':
        context = torch.backends.mkldnn.flags(enabled=False)
    elif setting == 'global hook':
        context = register_module_forward_hook(lambda module, args, output: calls.append(type(module).__name__))
    elif setting == 'global pre-hook':
        context = register_module_forward_pre_hook(lambda module, args: calls.append(type(module).__name__))
    elif setting == 'tracing':
        monkeypatch.setattr(torch.jit, 'is_tracing', lambda: True)
    elif setting == 'compiling':
        monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    elif setting == 'dispatch mode':
        context = FlopCounterMode(display=False)
    elif setting == 'trial failed':
        monkeypatch.setattr(arch, '_fused_ops_run', lambda dtype: False)
    elif setting == 'float64':
        net, x, expected = net.double(), x.double(), expected.double()
    else:
        context = torch.autocast('cpu', dtype=torch.float16)
    with torch.no_grad(), context:
        counted = count_convolutions(net, x)
        out = net(x)
    if setting.startswith('global'):
        context.remove()
        assert calls.count('Conv2d') >= 9 * len(net.mab)  # each MAB's k x k convolutions at least, twice
    if setting == 'dispatch mode':  # every convolution counted: as many FLOPs as on the meta device
        with torch.device('meta'):
            meta = DSMNet(**SMALL).eval()
        with torch.no_grad():
            assert flops(net, x) == flops(meta, torch.empty(x.shape, device='meta')) > 0
    assert counted.fused == 0 and counted.plain > 50
    assert (out - expected).abs().max() < (0.05 if setting == 'fp16 autocast' else 1e-5)


def test_traced_network_has_no_onednn_operators():
    torch.manual_seed(0)
    net = DSMNet(num_feat=8, num_levels=2, num_subspaces=2).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(net, x)
        assert torch.allclose(traced(x), net(x), atol=1e-5)
    graph = str(traced.inlined_graph)
    assert 'aten::_convolution' in graph and 'mkldnn' not in graph


@pytest.mark.parametrize('shape', [(2, 4, 9, 7), (1, 3, 1, 5), (1, 2, 4, 1), (1, 1, 1, 1)])
def test_max_pool3x3_without_indices_equals_max_pool2d(shape):
    torch.manual_seed(0)
    a = torch.randn(shape)
    for x in (a, a.contiguous(memory_format=torch.channels_last)):
        assert torch.equal(_max_pool3x3(x), F.max_pool2d(x, 3, stride=1, padding=1))


def test_the_one_time_trial_of_the_fused_operators():
    trial = arch._fused_ops_run.__wrapped__  # uncached
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert trial(torch.float32) and trial(torch.bfloat16)  # this build of PyTorch has them
    assert torch.equal(torch.get_rng_state(), state)  # the trial draws no random numbers
    with pytest.MonkeyPatch.context() as mp:  # a build without oneDNN's fused operators
        mp.setattr(torch.ops.mkldnn, '_convolution_pointwise', None)
        assert not trial(torch.float32)


@pytest.mark.parametrize('part', ['dw', 'bn_dw', 'pw', 'bn_pw'])
def test_a_hook_on_a_part_of_the_subspace_attention_is_called(part):
    """The fused path of the subspace attention skips its convolutions' and BatchNorms' modules: a forward hook
    on any of them sends it down the plain path, where the hook is called and sees the module's output."""
    torch.manual_seed(0)
    sa = randomised(DSMNet(**SMALL)).eval().mab['0_0'].cadb.sa
    x = torch.rand(1, 16, 10, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = sa(x)
        seen = []
        handle = getattr(sa, part).register_forward_hook(lambda m, args, out: seen.append(out.shape))
        out = sa(x)
    handle.remove()
    channels = 4 if part.endswith('pw') else 16  # num_subspaces maps after the pointwise convolution
    assert seen == [(1, channels, 10, 10)] and (out - expected).abs().max() < 1e-5
