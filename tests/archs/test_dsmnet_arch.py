"""DSMNet: shapes, wiring against the spec, ablation variants, attention against references, errors."""
import re

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import dsmnet_arch  # noqa: F401  (registers DSMNet)
from dsmnet_arch.archs.dsmnet_arch import (
    ATTENTIONS,
    CADB,
    MAB,
    MAB_VARIANTS,
    DSMNet,
    FusionBlock,
    SubspaceAttention,
    args_from_state_dict,
)

from basicsr.archs import build_network

from conftest import load_script

SMALL = dict(num_feat=16, num_levels=3, num_subspaces=4)


def count(model):
    return sum(p.numel() for p in model.parameters())


def expected_params(num_feat=32, num_levels=4, kernel_sizes=(1, 3, 5), attention='ca+sa', num_subspaces=8,
                    reduction=4, level_down=True, level_up=True, level_dense=True, k_eff=None):
    """Parameter count of the spec's network, from the spec's text (independent of the module code)."""
    c = num_feat
    names = attention.split('+')
    cadb = len(names) * c * c + c
    if 'ca' in names:
        cadb += 2 * c * (c // reduction) + c // reduction + c
    if 'sp' in names:
        cadb += 2 * 49 + 1
    if 'sa' in names:  # bias-free depthwise and grouped 1x1 convs, each followed by a BatchNorm
        cadb += c + 2 * c + c + 2 * num_subspaces
    k_eff = k_eff or kernel_sizes
    mab = sum(3 * (k * k * c * c + c) for k in k_eff) + len(kernel_sizes) * c * c + c + 9 * c * c + c + cadb

    def fusion(n):
        return n * c * c + c + cadb

    levels = num_levels if level_up else 1
    nodes = [(i, j) for j in range(num_levels) for i in range(min(levels, num_levels - j))]
    total = 3 * 9 * c + c + c * 9 * 3 + 3 + fusion(num_levels)  # stem, conv_last, head
    for i, j in nodes:
        total += mab
        if j == 0 and i > 0 and level_down:
            total += fusion(2)
        if j > 0:
            total += fusion((j if level_dense else 1) + int(level_up))
    return total


def test_default_model_matches_spec_size_and_registry():
    net = build_network({'type': 'DSMNet'})
    assert isinstance(net, DSMNet)
    assert len(net.mab) == 10
    assert count(net) == expected_params()
    assert 1.2e6 < count(net) < 1.4e6  # the spec's "about 1.3 M"


@pytest.mark.parametrize('shape', [(1, 3, 17, 23), (2, 3, 9, 31), (1, 3, 8, 16), (3, 3, 16, 16)])
def test_output_has_input_shape_in_train_mode(shape):
    torch.manual_seed(0)
    net = DSMNet(num_feat=16, num_levels=4, num_subspaces=4).train()
    out = net(torch.rand(shape))
    assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize('num_levels', [1, 2, 3])
def test_any_number_of_levels(num_levels):
    net = DSMNet(num_feat=8, num_levels=num_levels, num_subspaces=2)
    assert len(net.mab) == num_levels * (num_levels + 1) // 2
    assert count(net) == expected_params(num_feat=8, num_levels=num_levels, num_subspaces=2)
    assert net(torch.rand(1, 3, 13, 11)).shape == (1, 3, 13, 11)


def test_output_is_input_minus_rain_layer():
    net = DSMNet(**SMALL)
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(2, 3, 13, 19)
    assert torch.equal(net(x), x)  # R = 0 -> B = I
    torch.nn.init.constant_(net.conv_last.bias, 0.25)
    assert torch.allclose(net(x), x - 0.25)


def test_odd_sizes_are_reflect_padded_and_cropped():
    torch.manual_seed(0)
    net = DSMNet(**SMALL).eval()  # multiple of 4
    x = torch.rand(1, 3, 13, 10)
    padded = F.pad(x, (0, 2, 0, 3), mode='reflect')
    with torch.no_grad():
        assert torch.allclose(net(x), net(padded)[..., :13, :10], atol=1e-6)


def test_too_small_inputs_raise_clear_errors():
    net = DSMNet(num_feat=8, num_levels=4, num_subspaces=2)
    with pytest.raises(ValueError, match=r'num_levels=4 needs images of at least 5 x 5 pixels, got 4 x 9'):
        net(torch.rand(1, 3, 4, 9))
    # batch 1 at 1 x 1 on the coarsest level: BatchNorm has one value per channel in train mode
    with pytest.raises(ValueError, match=r'batch 1 of 8 x 8 gives 1 x 1 at level 3; use batch >= 2'):
        net(torch.rand(1, 3, 8, 8))
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    assert DSMNet(num_feat=8, num_levels=4, attention='ca')(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    net.eval()
    assert net(torch.rand(1, 3, 5, 5)).shape == (1, 3, 5, 5)
    # one level pads nothing: a single row or column is an image
    assert DSMNet(num_feat=8, num_levels=1, num_subspaces=2).eval()(torch.rand(1, 3, 1, 6)).shape == (1, 3, 1, 6)


@pytest.mark.parametrize('kwargs, message', [
    (dict(attention='ca+xx'), r"attention must be one of ca, sp, sa, ca\+sp, sp\+sa, ca\+sa; got 'ca\+xx'"),
    (dict(num_subspaces=3), r'num_subspaces must be a positive divisor of num_feat=16, got 3'),
    (dict(num_subspaces=0), r'num_subspaces must be a positive divisor of num_feat=16, got 0'),
    (dict(reduction=3), r'reduction must be a positive divisor of num_feat=16, got 3'),
    (dict(num_levels=0), r'num_levels must be an integer >= 1, got 0'),
    (dict(num_levels=2.0), r'num_levels must be an integer >= 1, got 2.0'),
    (dict(kernel_sizes=(1, 4)), r'kernel_sizes must be distinct odd positive integers, e.g. \(1, 3, 5\); got \(1, 4\)'),
    (dict(kernel_sizes=(3, 3)), r'kernel_sizes must be distinct odd positive integers'),
    (dict(kernel_sizes=()), r'kernel_sizes must be distinct odd positive integers'),
    (dict(kernel_sizes=(1, 3.0)), r'kernel_sizes must be distinct odd positive integers, .*; got \(1, 3.0\)'),
    (dict(kernel_sizes=(-1, 3)), r'kernel_sizes must be distinct odd positive integers'),
    (dict(num_out_ch=1), r'num_out_ch must equal num_in_ch=3 \(the output is I - R\), got 1'),
    (dict(mab_variant='M6'), r"mab_variant must be one of M1, M2, M3, M4, M5 \(paper Table 5\); got 'M6'"),
    (dict(res_scale=0), r'res_scale must be a number in \(0, 1\], got 0'),
    (dict(res_scale=1.5), r'res_scale must be a number in \(0, 1\], got 1.5'),
    (dict(res_scale='0.1'), r"res_scale must be a number in \(0, 1\], got '0.1'"),
    (dict(res_scale=True), r'res_scale must be a number in \(0, 1\], got True'),
])
def test_invalid_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DSMNet(**{'num_feat': 16, **kwargs})


def test_smallest_reduction_and_subspace_count():
    # reduction 1: the channel-attention MLP keeps all C channels; one subspace: ULSAM over all channels
    net = DSMNet(num_feat=8, num_levels=2, reduction=1, num_subspaces=1).eval()
    assert net.mab['0_0'].cadb.ca.mlp[0].weight.shape == (8, 8, 1, 1)
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)


def test_unused_branch_arguments_are_not_checked():
    # num_subspaces only matters with subspace attention, reduction only with channel attention:
    # 8 subspaces and a reduction of 5 do not divide 12 channels, and are not used here
    cases = [(dict(attention='ca+sp', num_subspaces=8), '.sa.'), (dict(attention='sp+sa', num_subspaces=4, reduction=5),
                                                                 '.ca.')]
    for kwargs, unused in cases:
        net = DSMNet(num_feat=12, num_levels=2, **kwargs)
        assert not [k for k in net.state_dict() if unused in k]
        assert net(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match='num_subspaces must be a positive divisor of num_feat=12, got 8'):
        DSMNet(num_feat=12, num_levels=2, attention='ca+sa', num_subspaces=8)


@pytest.mark.parametrize('attention', ATTENTIONS)
def test_attention_variants(attention):
    net = DSMNet(**SMALL, attention=attention)
    assert count(net) == expected_params(**SMALL, attention=attention)
    keys = net.state_dict().keys()
    for branch in ('ca', 'sp', 'sa'):
        present = any(f'.cadb.{branch}.' in k for k in keys)
        assert present == (branch in attention.split('+')), branch
    assert net(torch.rand(2, 3, 12, 12)).shape == (2, 3, 12, 12)


def test_attention_and_subspace_parameter_counts():
    sizes = {a: count(DSMNet(**SMALL, attention=a)) for a in ATTENTIONS}
    assert sizes['ca'] < sizes['ca+sa'] and sizes['sa'] < sizes['ca+sa']
    assert sizes['sp'] < sizes['ca+sp'] and sizes['sp'] < sizes['sp+sa']
    by_n = [count(DSMNet(num_feat=16, num_levels=3, num_subspaces=n)) for n in (4, 8, 16)]
    assert by_n[0] < by_n[1] < by_n[2]  # two BatchNorm parameters per subspace and CADB
    net = DSMNet(num_feat=16, num_levels=3, num_subspaces=16)
    assert net.state_dict()['head.cadb.sa.pw.weight'].shape == (16, 1, 1, 1)
    assert net(torch.rand(2, 3, 12, 12)).shape == (2, 3, 12, 12)


# Paper Table 5, as its text names the variants: (Across-Down, Across-Up, Dense-Fusion)
PAPER_TABLE_5 = {
    'M1': (False, False, False),  # "the MAB stripped of all connections"
    'M2': (True, True, False),  # "does not have a Dense-Fusion connection"
    'M3': (True, False, True),  # "does not have an Across-Up connection"
    'M4': (False, True, True),  # "without an Across-Down connection"
    'M5': (True, True, True),  # "the MAB that we proposed"
}


def switches(mab):
    return mab.across_down, mab.across_up, mab.dense_fusion


def test_mab_variants_are_paper_table_5():
    assert list(MAB_VARIANTS) == list(PAPER_TABLE_5)
    for name, expected in PAPER_TABLE_5.items():
        assert (MAB_VARIANTS[name]['across_down'], MAB_VARIANTS[name]['across_up'],
                MAB_VARIANTS[name]['dense_fusion']) == expected, name
        net = build_network({'type': 'DSMNet', 'mab_variant': name, **SMALL})  # as an options file gives it
        assert {switches(m) for m in net.mab.values()} == {expected}, name
    assert {switches(m) for m in DSMNet(**SMALL).mab.values()} == {PAPER_TABLE_5['M5']}  # the default


def test_mab_variants_share_weights_and_network():
    """Table 5 compares connections alone: same keys, shapes and 10 MABs in every variant."""
    shapes = {name: {k: v.shape for k, v in DSMNet(mab_variant=name).state_dict().items()} for name in PAPER_TABLE_5}
    assert all(s == shapes['M5'] for s in shapes.values())
    for name in PAPER_TABLE_5:
        net = DSMNet(**SMALL, mab_variant=name)
        assert count(net) == expected_params(**SMALL) and len(net.mab) == 6, name


LEVEL_LINKS = [dict(level_down=d, level_up=u, level_dense=e) for d in (True, False) for u in (True, False)
               for e in (True, False)]


@pytest.mark.parametrize('links', LEVEL_LINKS, ids=lambda links: '-'.join(k for k, v in links.items() if v) or 'none')
def test_level_links_wiring_and_sizes(links):
    """The network-level links of our reconstruction (not Table 5), each with its own switch."""
    net = DSMNet(**SMALL, **links)
    assert count(net) == expected_params(**SMALL, **links)
    assert len(net.mab) == (6 if links['level_up'] else 3)
    assert len(net.down) == (2 if links['level_down'] and links['level_up'] else 0)
    assert net(torch.rand(2, 3, 12, 12)).shape == (2, 3, 12, 12)


@pytest.mark.parametrize('name', list(PAPER_TABLE_5))
def test_each_mab_variant_trains_a_step(name):
    torch.manual_seed(0)
    net = DSMNet(**SMALL, mab_variant=name).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.mse_loss(net(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    moved = [k for k, v in net.state_dict().items() if 'conv_c.k5' in k and not torch.equal(v, before[k])]
    assert moved, 'the last layer of the 5x5 branch did not train'


def mab_branch_outputs(mab, x, perturb=None):
    """F_c^k of every branch, with ``perturb`` added to the output F_a^k of conv_a's branch ``k3``."""
    if perturb is not None:
        handle = mab.conv_a['k3'].register_forward_hook(lambda m, args, out: out + perturb)
    with torch.no_grad():
        out = [f.clone() for f in mab.branches(x)]
    if perturb is not None:
        handle.remove()
    return out


@pytest.mark.parametrize('name', list(PAPER_TABLE_5))
def test_mab_connections_decide_which_branches_see_a_branch(name):
    """A change to the 3x3 branch's features reaches the 1x1 branch only with Across-Up, the 5x5
    branch only with Across-Down (M1: no other branch at all)."""
    torch.manual_seed(0)
    down, up, _ = PAPER_TABLE_5[name]
    mab = MAB(8, (1, 3, 5), False, **MAB_VARIANTS[name], attention='ca', num_subspaces=1, reduction=2)
    x = torch.randn(1, 8, 9, 9)
    plain = mab_branch_outputs(mab, x)
    changed = mab_branch_outputs(mab, x, perturb=torch.randn(1, 8, 9, 9))
    moved = [not torch.equal(a, b) for a, b in zip(plain, changed)]
    assert moved == [up, True, down]


def test_state_dict_layout_encodes_the_configuration():
    """The key/shape conventions of the module docstring, which checkpoint readers rely on."""
    sd = DSMNet(num_feat=16, num_levels=4, num_subspaces=4, reduction=2, kernel_sizes=(1, 3, 7)).state_dict()
    assert sd['conv_first.weight'].shape == (16, 3, 3, 3)
    assert sd['conv_last.weight'].shape == (3, 16, 3, 3)
    assert sorted(k.split('.')[1] for k in sd if k.startswith('mab.') and k.endswith('conv_fuse.weight')) == [
        '0_0', '0_1', '0_2', '0_3', '1_0', '1_1', '1_2', '2_0', '2_1', '3_0']
    assert sd['mab.0_0.conv_a.k7.weight'].shape == (16, 16, 7, 7)
    assert sd['fuse.0_3.conv.weight'].shape == (16, 4 * 16, 1, 1)
    assert sd['down.3.conv.weight'].shape == (16, 2 * 16, 1, 1)
    assert sd['mab.2_1.cadb.ca.mlp.0.weight'].shape == (8, 16, 1, 1)
    assert sd['head.cadb.sa.pw.weight'].shape == (4, 4, 1, 1)
    no_dense = DSMNet(num_feat=16, num_levels=4, level_dense=False).state_dict()
    assert no_dense['fuse.0_3.conv.weight'].shape == (16, 2 * 16, 1, 1)


@pytest.mark.parametrize('kwargs, expected', [
    (dict(num_feat=8, num_levels=1, kernel_sizes=(3, 1), attention='sp'),
     dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=1, kernel_sizes=[3, 1], attention='sp')),
    (dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_levels=2, num_subspaces=2, reduction=2),
     dict(num_in_ch=1, num_out_ch=1, num_feat=8, num_levels=2, kernel_sizes=[1, 3, 5], dilated=False,
          attention='ca+sa', reduction=2, num_subspaces=2, level_up=True, level_down=True)),
    (dict(num_feat=8, num_levels=3, kernel_sizes=(1, 3), attention='sa', num_subspaces=4, level_down=False,
          level_dense=False),
     dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=3, kernel_sizes=[1, 3], attention='sa', num_subspaces=4,
          level_up=True, level_down=False, level_dense=False)),
    (dict(num_feat=8, num_levels=3, kernel_sizes=(5, 1), dilated=True, attention='ca', reduction=8, level_up=False),
     dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_levels=3, kernel_sizes=[5, 1], dilated=True, attention='ca',
          reduction=8, level_up=False, level_dense=True)),
], ids=['1-level', '2-levels', 'sparse-links', 'dilated-no-up'])
def test_args_read_off_the_weights_are_exactly_what_the_keys_tell(kwargs, expected):
    # no more than the keys determine: dilated only with a kernel over 3, level_down only with level_up,
    # level_dense only with three levels or more
    assert args_from_state_dict(DSMNet(**kwargs).state_dict()) == expected


def test_args_cannot_be_read_off_other_weights():
    message = 'the state dict has no conv_first / conv_last / mab.0_0 weights of a DSMNet'
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        args_from_state_dict({'conv_first.weight': torch.zeros(8, 3, 3, 3), 'conv_last.weight': torch.zeros(3, 8, 3)})
    state = {k: torch.zeros(8, 8, 1, 1) for k in ('conv_first.weight', 'conv_last.weight', 'mab.0_0.cadb.conv.weight')}
    with pytest.raises(ValueError, match=re.escape('no known attention branches in mab.0_0.cadb (found [])')):
        args_from_state_dict(state)
    state.update({f'mab.0_0.cadb.{name}.w': torch.zeros(1) for name in ('ca', 'sp', 'sa')})
    message = "no known attention branches in mab.0_0.cadb (found ['ca', 'sa', 'sp'])"
    with pytest.raises(ValueError, match=re.escape(message)):
        args_from_state_dict(state)


def test_dilated_kernels():
    net = DSMNet(**SMALL, dilated=True)
    assert count(net) == expected_params(**SMALL, k_eff=(1, 3, 3))
    conv5 = net.mab['0_0'].conv_b['k5']
    assert conv5.weight.shape[-2:] == (3, 3) and conv5.dilation == (2, 2) and conv5.padding == (2, 2)
    assert net.mab['0_0'].conv_b['k1'].weight.shape[-2:] == (1, 1)
    x = torch.rand(1, 3, 15, 13)
    assert net(x).shape == x.shape


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = DSMNet(num_feat=16, num_subspaces=8).train()  # default triangle, all branches
    x = torch.rand(2, 3, 32, 32)
    (net(x) - x.flip(-1)).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_eval_mode_is_deterministic():
    torch.manual_seed(0)
    net = DSMNet(**SMALL)
    x = torch.rand(2, 3, 20, 20)
    net(x)  # one train-mode pass moves the BatchNorm running statistics
    net.eval()
    with torch.no_grad():
        first, second = net(x), net(x)
        alone = net(x[:1])
    assert torch.equal(first, second)
    assert torch.allclose(alone, first[:1], atol=1e-6)  # no batch statistics in eval mode


def subspace_loop(sa, x, training):
    """ULSAM as written in its paper: one small network per subspace, in a Python loop."""
    n = sa.num_subspaces
    size = x.shape[1] // n
    outs = []
    for g in range(n):
        ch = slice(g * size, (g + 1) * size)
        xg = x[:, ch]
        a = F.conv2d(xg, sa.dw.weight[ch], groups=size)  # depthwise 1x1
        a = F.batch_norm(a, sa.bn_dw.running_mean[ch], sa.bn_dw.running_var[ch], sa.bn_dw.weight[ch],
                         sa.bn_dw.bias[ch], training=training, eps=sa.bn_dw.eps)
        a = F.max_pool2d(F.relu(a), 3, stride=1, padding=1)
        a = F.conv2d(a, sa.pw.weight[g:g + 1])  # C / n -> 1
        a = F.batch_norm(a, sa.bn_pw.running_mean[g:g + 1], sa.bn_pw.running_var[g:g + 1], sa.bn_pw.weight[g:g + 1],
                         sa.bn_pw.bias[g:g + 1], training=training, eps=sa.bn_pw.eps)
        a = F.relu(a)
        a = torch.softmax(a.flatten(1), dim=1).view_as(a)
        outs.append(a * xg + xg)
    return torch.cat(outs, 1)


@pytest.mark.parametrize('num_subspaces', [1, 4, 16])
def test_grouped_subspace_attention_equals_per_subspace_loop(num_subspaces):
    torch.manual_seed(0)
    sa = SubspaceAttention(16, num_subspaces)
    for p in sa.parameters():  # non-trivial affine BatchNorm parameters
        torch.nn.init.uniform_(p, -1.5, 1.5)
    x = torch.randn(2, 16, 7, 9) * 3
    with torch.no_grad():
        reference = subspace_loop(sa, x.clone(), training=True)
        assert (sa.train()(x) - reference).abs().max() < 1e-5
        sa(x * 2 + 1)  # moves the running statistics away from their initial values
        sa.eval()
        reference = subspace_loop(sa, x, training=False)
        assert (sa(x) - reference).abs().max() < 1e-5


def test_fusion_block_refuses_the_wrong_number_of_features():
    """Its 1x1 convolution runs part by part, but checks the channels as one over Cat[feats] would."""
    block = FusionBlock(3, 8, 'ca+sa', 2, 2).eval()
    feats = [torch.rand(1, 8, 6, 6) for _ in range(3)]
    with torch.no_grad():
        assert block(feats).shape == (1, 8, 6, 6)
        with pytest.raises(ValueError, match='got 16 input channels in all, expected 24'):
            block(feats[:2])
        with pytest.raises(RuntimeError):
            block(feats + feats[:1])


def test_cadb_is_fusion_of_concurrent_branches_plus_input():
    torch.manual_seed(0)
    cadb = CADB(16, 'ca+sa', num_subspaces=4, reduction=4).eval()
    x = torch.randn(1, 16, 6, 6)
    with torch.no_grad():
        gap, gmp = x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
        ca = x * torch.sigmoid(cadb.ca.mlp(gap) + cadb.ca.mlp(gmp))
        expected = cadb.conv(torch.cat([ca, subspace_loop(cadb.sa, x, training=False)], 1)) + x
        assert torch.allclose(cadb(x), expected, atol=1e-5)


def test_mab_m5_follows_equations_2_to_11():
    """The default MAB (M5) against eq. 2-11 written out: outputs and gradients."""
    torch.manual_seed(0)
    mab = MAB(8, (1, 3, 5), False, **MAB_VARIANTS['M5'], attention='ca', num_subspaces=1, reduction=2)
    x = torch.randn(1, 8, 9, 9, requires_grad=True)

    def conv(stage, k, inp):
        m = getattr(mab, stage)[f'k{k}']
        return F.leaky_relu(F.conv2d(inp, m.weight, m.bias, padding=k // 2), 0.2)

    fa = {k: conv('conv_a', k, x) for k in (1, 3, 5)}  # eq. 2-4
    fb = {k: conv('conv_b', k, fa[1] + fa[3] + fa[5]) for k in (1, 3, 5)}  # eq. 5-7
    fc = {k: conv('conv_c', k, fb[1] + fb[3] + fb[5] + fa[k]) + fa[k] for k in (1, 3, 5)}  # eq. 8-10
    expected = mab.cadb(mab.conv_fuse(mab.conv_cat(torch.cat([fc[1], fc[3], fc[5]], 1)))) + x  # eq. 11
    out = mab(x)
    assert torch.allclose(out, expected, atol=1e-5)
    weight = torch.randn_like(out)
    grads = torch.autograd.grad((out * weight).sum(), [x, *mab.parameters()])
    expected_grads = torch.autograd.grad((expected * weight).sum(), [x, *mab.parameters()])
    for (name, _), g, e in zip([('input', x), *mab.named_parameters()], grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-4), name


class ConvolutionMACs(TorchDispatchMode):
    """Weights x output positions of every convolution PyTorch runs (module or functional; under a dispatch mode
    the network runs no oneDNN fused convolution)."""

    def __init__(self):
        super().__init__()
        self.macs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten.convolution:
            self.macs.append(args[1].numel() * out.shape[-2] * out.shape[-1])
        return out


def test_complexity_counts_every_convolution_once():
    script = load_script('model_complexity')
    net = DSMNet(num_feat=16)
    with torch.no_grad(), ConvolutionMACs() as recorded:  # an independent count
        net(torch.rand(1, 3, 24, 24))
    # 10 MABs x (9 k x k + conv_cat + conv_fuse + CADB) + fusion blocks + first and last
    assert len(recorded.macs) > 10 * 12
    assert script.complexity(24, num_feat=16) == (count(net), sum(recorded.macs))


@pytest.mark.slow  # counts the FLOPs of every variant: 6 s
def test_complexity_table_lists_every_variant(capsys):
    load_script('model_complexity').main(['--size', '16', '--num-feat', '16'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '| variant | params | GMACs at 16x16 |'
    rows = {line.split('|')[1].strip(): int(line.split('|')[2].replace(',', '')) for line in lines[2:]}
    expected = {'default (ca+sa, n=8, M5)': expected_params(num_feat=16)}
    expected.update({f'attention={a}': expected_params(num_feat=16, attention=a) for a in ATTENTIONS[:-1]})
    expected.update({f'num_subspaces={n}': expected_params(num_feat=16, num_subspaces=n) for n in (4, 16)})
    for name, (down, up, dense) in PAPER_TABLE_5.items():
        on = [k for k, v in zip(('across_down', 'across_up', 'dense_fusion'), (down, up, dense)) if v]
        expected[f'mab_variant={name} ({", ".join(on) if on else "no connection"})'] = expected_params(num_feat=16)
    expected['dilated=True'] = expected_params(num_feat=16, k_eff=(1, 3, 3))
    for link in ('level_down', 'level_up', 'level_dense'):
        expected[f'{link}=False'] = expected_params(num_feat=16, **{link: False})
    assert rows == expected
