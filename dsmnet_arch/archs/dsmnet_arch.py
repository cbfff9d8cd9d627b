"""DSM-Net: Deep Scale-space Mining Network for single-image deraining (Li et al., CVPRW 2022).

The network estimates the rain layer R of a rainy image I = B + R and returns B = I - R. The
paper gives the equations of the MAB and names the parts of the network; what it leaves open is
our reconstruction (docs/architecture.md says which is which), exposed as constructor arguments
of :class:`DSMNet`. Equation numbers in the comments are the paper's.

Layout (``num_levels`` = L scale levels, node M(i, j) = MAB at level i, column j, i + j <= L - 1)::

    level 0:  S0 -> M(0,0) -> M(0,1) -> M(0,2) -> M(0,3) -> head -> R,  B = I - R
                      |  /      |  /      |  /
    level 1:  S1 -> M(1,0) -> M(1,1) -> M(1,2)          (| level_down, / level_up,
                      |  /      |  /                     -> level_dense: all earlier nodes of the level)
    level 2:  S2 -> M(2,0) -> M(2,1)
                      |  /
    level 3:  S3 -> M(3,0)

Weight layout: the state-dict keys and the constructor arguments they fix (``params`` of a
BasicSR checkpoint; :func:`args_from_state_dict` reads them back):

- ``conv_first.weight`` is (num_feat, num_in_ch, 3, 3); ``conv_last.weight`` is (num_out_ch, num_feat, 3, 3).
- ``mab.{i}_{j}.*`` is node M(i, j): num_levels is the number of ``mab.0_{j}`` nodes. Nodes at
  levels i >= 1 exist only with level_up (without it they cannot reach the head and are not built).
- ``down.{i}.*`` (the level-down fusion into M(i, 0)) exists only with level_down and level_up.
- ``fuse.{i}_{j}.conv.weight`` is (C, n * C, 1, 1) for the n features fused into M(i, j), j >= 1:
  n = (j if level_dense else 1) + (1 if level_up else 0).
- ``mab.0_0.conv_a.k{k}.weight`` exists for each k in kernel_sizes, in their order; its kernel is
  k x k, or 3 x 3 (1 x 1 for k = 1) when dilated.
- Every CADB (``*.cadb.*`` and ``head.cadb.*``) holds ``ca.*`` / ``sp.*`` / ``sa.*`` for the
  attention branches it uses: ``ca.mlp.0.weight`` is (num_feat // reduction, num_feat, 1, 1) and
  ``sa.pw.weight`` is (num_subspaces, num_feat // num_subspaces, 1, 1).
- mab_variant and res_scale leave no trace: the five variants have the same weights, as has every
  res_scale. Checkpoints written by this package record them with the other arguments (``dsmnet_arch.checkpoint``).
"""
import functools
import types

import torch
from torch import nn as nn
from torch.nn import functional as F
from torch.nn.modules import module as _module
from torch.nn.utils.fusion import fuse_conv_bn_weights

try:
    from basicsr.utils.registry import ARCH_REGISTRY
except ImportError:  # torch alone, e.g. in a BasicSR fork that finds ``type:`` by scanning *_arch.py files
    ARCH_REGISTRY = None

ATTENTIONS = ('ca', 'sp', 'sa', 'ca+sp', 'sp+sa', 'ca+sa')

# Paper Table 5 (section 4.3): the connections each variant keeps, as the table lists them. That they
# act between the MAB's kernel branches is our reading of eq. 5-10, not stated by the paper; the
# other reading, links between the MABs, is DSMNet's level_* switches (docs/architecture.md).
MAB_VARIANTS = {
    'M1': dict(across_down=False, across_up=False, dense_fusion=False),  # "stripped of all connections"
    'M2': dict(across_down=True, across_up=True, dense_fusion=False),  # no Dense-Fusion
    'M3': dict(across_down=True, across_up=False, dense_fusion=True),  # no Across-Up
    'M4': dict(across_down=False, across_up=True, dense_fusion=True),  # no Across-Down
    'M5': dict(across_down=True, across_up=True, dense_fusion=True),  # the proposed MAB
}


def _onednn(x, *modules):
    """The dtype in which the convolutions on ``x`` run as oneDNN's fused ones (:func:`_conv_act`,
    :func:`_conv_cat`, :class:`SubspaceAttention` with its BatchNorms folded), or ``None`` where they may not.

    CPU inference without autograd, forward hooks on ``modules`` (which would not be called), or anything that
    records or counts the operators (tracing for ONNX export, ``torch.compile``, a dispatch mode such as
    ``FlopCounterMode``): float32, or bfloat16 under a CPU autocast to bfloat16 (inputs, weights and outputs of
    the convolutions in bfloat16, as autocast has them). The same arithmetic in fewer passes.
    """
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in modules) or any(
        getattr(_module, name, None) for name in ('_global_forward_hooks', '_global_forward_pre_hooks'))
    traced = (torch.jit.is_tracing() or torch.compiler.is_compiling()
              or getattr(torch._C, '_len_torch_dispatch_stack', lambda: 0)() > 0)
    if (x.device.type != 'cpu' or torch.is_grad_enabled() or hooked or traced or not torch.backends.mkldnn.enabled
            or not torch.backends.mkldnn.is_available()):
        return None
    dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else torch.float32
    ok = dtype in (torch.float32, torch.bfloat16) and x.dtype in (torch.float32, dtype) and _fused_ops_run(dtype)
    return dtype if ok else None


@functools.cache
def _fused_ops_run(dtype):
    """Whether this build of PyTorch runs oneDNN's fused convolutions in ``dtype`` (tried once on a tiny tensor;
    a build or processor without them keeps the plain path)."""
    geometry = types.SimpleNamespace(padding=(0, 0), stride=(1, 1), dilation=(1, 1), groups=1)  # of a 1x1 conv
    one = torch.ones(1, 1, 1, 1)
    try:
        _fused_conv_add(one, one, None, geometry, one, dtype)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def _fused_conv(x, weight, bias, conv, attr, dtype, scalars=()):
    """oneDNN's convolution of ``x`` in ``dtype`` with the geometry of ``conv`` and an activation ``attr``, one pass."""
    return torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight.to(dtype), _to(bias, dtype), conv.padding,
                                                   conv.stride, conv.dilation, conv.groups, attr, list(scalars), '')


def _fused_conv_add(x, weight, bias, conv, other, dtype, into=False):
    """oneDNN's ``conv(x) + other`` in ``dtype``, one pass: a new tensor, or ``other`` itself updated when ``into``."""
    args = (x.to(dtype), weight.to(dtype), _to(bias, dtype), conv.padding, conv.stride, conv.dilation, conv.groups,
            'add', 1, None, [], None)
    if into:
        return torch.ops.mkldnn._convolution_pointwise_.binary(other, *args)
    return torch.ops.mkldnn._convolution_pointwise.binary(args[0], other.to(dtype), *args[1:])


def _to(tensor, dtype):
    return None if tensor is None else tensor.to(dtype)


def _conv_act(conv, x):
    """LeakyReLU0.2(conv(x)): one oneDNN pass where :func:`_onednn`, else the activation in place."""
    dtype = _onednn(x, conv)
    if dtype is not None:
        return _fused_conv(x, conv.weight, conv.bias, conv, 'leaky_relu', dtype, [0.2])
    return F.leaky_relu_(conv(x), 0.2)


def _sum(tensors):
    """Sum of an iterable of tensors: one tensor as is; more are accumulated in place in one new
    tensor as they come, so that without autograd each term can be freed once it is added."""
    tensors = iter(tensors)
    total = next(tensors)
    for i, t in enumerate(tensors):
        total = total + t if i == 0 else total.add_(t)
    return total


def _conv_cat(conv, parts, residual=None):
    """``conv(Cat[parts]) (+ residual)`` for a 1x1 convolution and an iterable of parts, as the sum of the
    convolutions of the parts with the matching slices of its weight: the same arithmetic, without
    writing the concatenation, and each part can be freed once used. Where :func:`_onednn`, each
    convolution adds itself to the sum (and the first to ``residual``) in its own pass."""
    out, start = None, 0
    for part in parts:
        weight = conv.weight[:, start:start + part.shape[1]]
        start += part.shape[1]
        dtype = _onednn(part)
        if dtype is None:
            out = F.conv2d(part, weight, conv.bias) if out is None else out.add_(F.conv2d(part, weight))
        elif out is None and residual is None:
            out = _fused_conv(part, weight, conv.bias, conv, 'none', dtype)
        elif out is None:
            out, residual = _fused_conv_add(part, weight, conv.bias, conv, residual, dtype), None
        else:
            _fused_conv_add(part, weight, None, conv, out, dtype, into=True)
    if start != conv.in_channels:  # as the convolution of a concatenation would
        raise ValueError(f'{conv} got {start} input channels in all, expected {conv.in_channels}')
    return out if residual is None else out.add_(residual)


def _fused_conv_bn_relu(conv, bn, x):
    """ReLU(bn(conv(x))) for an eval-mode BatchNorm: one oneDNN pass, the BatchNorm folded into the weights."""
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                        bn.bias)
    return _fused_conv(x, weight, bias, conv, 'relu', x.dtype)


def _max_pool3x3(a):
    """``F.max_pool2d(a, 3, stride=1, padding=1)`` for inference: the maximum of each row of three, then of
    each column of three, in place on two copies, without the indices that ``max_pool2d`` writes."""
    out = a
    for dim in (-1, -2):
        src, out = out, out.clone()
        n = out.shape[dim] - 1
        torch.maximum(out.narrow(dim, 1, n), src.narrow(dim, 0, n), out=out.narrow(dim, 1, n))
        torch.maximum(out.narrow(dim, 0, n), src.narrow(dim, 1, n), out=out.narrow(dim, 0, n))
    return out


class ChannelAttention(nn.Module):
    """CBAM channel attention: X * sigmoid(MLP(GAP(X)) + MLP(GMP(X))), one shared MLP.

    Args:
        num_feat (int): Channel number C.
        reduction (int): The MLP is C -> C / reduction -> C.
    """

    def __init__(self, num_feat, reduction):
        super().__init__()
        if reduction < 1 or num_feat % reduction:
            raise ValueError(f'reduction must be a positive divisor of num_feat={num_feat}, got {reduction}')
        hidden = num_feat // reduction
        self.mlp = nn.Sequential(nn.Conv2d(num_feat, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, num_feat, 1))

    def forward(self, x):
        gate = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(gate)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: X * sigmoid(Conv7x7(Cat[channel max, channel mean])) (no arguments)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x):
        stats = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(stats))


class SubspaceAttention(nn.Module):
    """ULSAM subspace attention, all subspaces in one pass with grouped convolutions.

    Per subspace g (C / n channels): depthwise 1x1 -> BN -> ReLU -> MaxPool3x3 -> 1x1 (C / n -> 1)
    -> BN -> ReLU -> softmax over all positions = map a_g; output x_g * a_g + x_g.

    Args:
        num_feat (int): Channel number C.
        num_subspaces (int): Number n of subspaces; must divide C.
    """

    def __init__(self, num_feat, num_subspaces):
        super().__init__()
        if num_subspaces < 1 or num_feat % num_subspaces:
            raise ValueError(f'num_subspaces must be a positive divisor of num_feat={num_feat}, '
                             f'got {num_subspaces}')
        self.num_subspaces = num_subspaces
        self.dw = nn.Conv2d(num_feat, num_feat, 1, groups=num_feat, bias=False)  # BN follows: no bias
        self.bn_dw = nn.BatchNorm2d(num_feat)
        self.pw = nn.Conv2d(num_feat, num_subspaces, 1, groups=num_subspaces, bias=False)
        self.bn_pw = nn.BatchNorm2d(num_subspaces)

    def forward(self, x):
        dtype = _onednn(x, self.dw, self.bn_dw, self.pw, self.bn_pw)
        if self.training or dtype is None:
            a = F.relu_(self.bn_dw(self.dw(x)))
            a = F.max_pool2d(a, 3, stride=1, padding=1)
            a = F.relu_(self.bn_pw(self.pw(a)))  # (b, n, h, w): one map per subspace
        else:
            a = _max_pool3x3(_fused_conv_bn_relu(self.dw, self.bn_dw, x.to(dtype)))
            a = _fused_conv_bn_relu(self.pw, self.bn_pw, a)
        # softmax over all positions of each map (minus its maximum, a constant: no overflow); the
        # maximum of an NCHW copy: over the positions of a channels-last map it is 10x slower
        a = (a - a.detach().contiguous().amax((2, 3), keepdim=True)).exp_()
        a = a / a.sum((2, 3), keepdim=True)
        # x_g * a_g + x_g for subspace g = channels g C/n .. (g + 1) C/n, computed on (b, h, w, n, C/n)
        # views of channels-last tensors: the result is channels-last with the strides PyTorch
        # recognises as such even for a batch of one (else the next blocks fall back to NCHW)
        x_g = x.permute(0, 2, 3, 1).unflatten(3, (self.num_subspaces, -1))
        return (x_g * (a.permute(0, 2, 3, 1).unsqueeze(4) + 1)).flatten(3).permute(0, 3, 1, 2)


class CADB(nn.Module):
    """Concurrent Attention Distillation Block: CADB(X) = Conv1x1(Cat[branches(X)]) + X.

    Args:
        num_feat (int): Channel number C.
        attention (str): The concurrent branches, one of ``ATTENTIONS``: ``ca`` channel attention,
            ``sp`` spatial attention, ``sa`` subspace attention (paper: ``ca+sa``).
        num_subspaces (int): Subspaces of the ``sa`` branch.
        reduction (int): MLP reduction of the ``ca`` branch.
    """

    def __init__(self, num_feat, attention, num_subspaces, reduction):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f'attention must be one of {", ".join(ATTENTIONS)}; got {attention!r}')
        names = attention.split('+')
        if 'ca' in names:
            self.ca = ChannelAttention(num_feat, reduction)
        if 'sp' in names:
            self.sp = SpatialAttention()
        if 'sa' in names:
            self.sa = SubspaceAttention(num_feat, num_subspaces)
        self.branches = names
        self.conv = nn.Conv2d(len(names) * num_feat, num_feat, 1)

    def forward(self, x):
        return _conv_cat(self.conv, (getattr(self, name)(x) for name in self.branches), residual=x)


def _conv_k(num_feat, k, dilated):
    """The k x k convolution of the MAB, or a 3x3 one with dilation (k - 1) / 2 when dilated."""
    if dilated and k > 1:
        dilation = (k - 1) // 2
        return nn.Conv2d(num_feat, num_feat, 3, padding=dilation, dilation=dilation)
    return nn.Conv2d(num_feat, num_feat, k, padding=k // 2)


class MAB(nn.Module):
    """Multi-scale Attention Block (paper eq. 2-11) with the connections of paper Table 5.

    Branches run one Conv_k per kernel size k in three layers a, b, c. Ordered by kernel size, the
    input of branch k in layers b and c is cross(X)^k = X^k + [across_down] the smaller kernels'
    X^k' + [across_up] the larger kernels' X^k', X the previous layer's outputs; dense_fusion adds
    F_a^k to layer c's input and output (eq. 8-10). All three on is eq. 2-11 exactly; all off
    leaves independent branches fused by eq. 11 alone. Every setting has the same weights.

    Args:
        num_feat (int): Channel number C.
        kernel_sizes (tuple[int]): The parallel kernel sizes k (odd, distinct), in the order of eq. 11's
            concatenation.
        dilated (bool): Use 3x3 kernels with dilation (k - 1) / 2 instead of k x k.
        across_down (bool): Each branch takes in the branches of smaller kernels.
        across_up (bool): Each branch takes in the branches of larger kernels.
        dense_fusion (bool): The F_a^k terms of eq. 8-10.
        attention, num_subspaces, reduction: Passed to the :class:`CADB`.
        res_scale (float): Factor of the block's branch before the residual addition of eq. 11.
    """

    def __init__(self, num_feat, kernel_sizes, dilated, across_down, across_up, dense_fusion, attention, num_subspaces,
                 reduction, res_scale=1.0):
        super().__init__()
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes or len(set(kernel_sizes)) != len(kernel_sizes) or any(
                not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f'kernel_sizes must be distinct odd positive integers, e.g. (1, 3, 5); got {kernel_sizes}')
        self.across_down, self.across_up, self.dense_fusion = across_down, across_up, dense_fusion
        self.res_scale = res_scale
        # the branches in the order of kernel_sizes (that of the concatenation, eq. 11), with keys k1,
        # k3, k5 that keep the kernel sizes in the state dict; the connections go by kernel size
        order = sorted(kernel_sizes)
        self.rank = [order.index(k) for k in kernel_sizes]  # position of each branch by kernel size
        for layer in ('conv_a', 'conv_b', 'conv_c'):
            setattr(self, layer, nn.ModuleDict({f'k{k}': _conv_k(num_feat, k, dilated) for k in kernel_sizes}))
        self.conv_cat = nn.Conv2d(len(kernel_sizes) * num_feat, num_feat, 1)
        self.conv_fuse = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.cadb = CADB(num_feat, attention, num_subspaces, reduction)

    def forward(self, x):
        out = self.cadb(self.conv_fuse(_conv_cat(self.conv_cat, self.branches(x))))  # eq. 11
        return torch.add(x, out, alpha=self.res_scale)

    def branches(self, x):
        """Yields the F_c^k of eq. 2-10 one by one; without autograd, each is freed once used."""
        f_a = [_conv_act(conv, x) for conv in self.conv_a.values()]  # eq. 2-4
        f_b = self._cross(_conv_act(conv, s) for conv, s in zip(self.conv_b.values(), self._cross(f_a)))  # eq. 5-7
        for conv, s, a in zip(self.conv_c.values(), f_b, f_a):
            yield _conv_act(conv, s + a) + a if self.dense_fusion else _conv_act(conv, s)  # eq. 8-10

    def _cross(self, feats):
        """cross(X)^k for every branch k, from an iterable of one layer's outputs X^k."""
        if self.across_down and self.across_up:  # every branch takes the sum of all (eq. 5-10)
            total = _sum(feats)
            return [total] * len(self.rank)
        feats = list(feats)
        return [
            _sum([x] + [y for y, r in zip(feats, self.rank) if (r < rank and self.across_down) or
                        (r > rank and self.across_up)]) for x, rank in zip(feats, self.rank)
        ]


class FusionBlock(nn.Module):
    """Cross-layer fusion: CADB(LeakyReLU(Conv1x1(Cat[features]))), n * C -> C.

    Args:
        num_inputs (int): Number n of fused features.
        num_feat (int): Channel number C.
        attention, num_subspaces, reduction: Passed to the :class:`CADB`.
    """

    def __init__(self, num_inputs, num_feat, attention, num_subspaces, reduction):
        super().__init__()
        self.conv = nn.Conv2d(num_inputs * num_feat, num_feat, 1)
        self.cadb = CADB(num_feat, attention, num_subspaces, reduction)

    def forward(self, feats):
        return self.cadb(F.leaky_relu_(_conv_cat(self.conv, feats), 0.2))


class DSMNet(nn.Module):
    """DSM-Net: a triangle of MABs over an average-pooled scale space; returns B = I - R.

    Args:
        num_in_ch (int): Channels of the input image. Default: 3.
        num_out_ch (int): Channels of the output; must equal num_in_ch (B = I - R). Default: 3.
        num_feat (int): Channel number C of all features (our choice). Default: 32.
        num_levels (int): Scale levels L >= 1 (our choice); the triangle has L (L + 1) / 2 MABs.
            Default: 4 (the paper's 10 MABs).
        kernel_sizes (tuple[int]): Parallel kernel sizes of every MAB. Default: (1, 3, 5).
        dilated (bool): 3x3 kernels with dilation (k - 1) / 2 instead of k x k. Default: False.
        attention (str): CADB branches: 'ca+sa' (paper), or 'ca', 'sp', 'sa', 'ca+sp', 'sp+sa'
            (paper Table 3). Default: 'ca+sa'.
        num_subspaces (int): ULSAM subspaces, a divisor of num_feat (paper Table 4: 4, 8, 16).
            Default: 8.
        reduction (int): Channel-attention MLP reduction, a divisor of num_feat. Default: 4.
        mab_variant (str): The connections inside every MAB, paper Table 5: 'M1' .. 'M5'
            (``MAB_VARIANTS``). Default: 'M5', the paper's MAB.
        level_down (bool): Network link, our reconstruction: M(i, 0) also fuses the pooled
            M(i - 1, 0). Default: True.
        level_up (bool): Network link, our reconstruction: M(i, j) also fuses the upsampled
            M(i + 1, j - 1). Without it the coarser levels cannot reach the head, so only the
            num_levels MABs of level 0 are built. Default: True.
        level_dense (bool): Network link, our reconstruction: M(i, j) fuses all earlier nodes of
            its level, not only M(i, j - 1). Default: True.
        res_scale (float): Our choice, for training at the paper's learning rate: every MAB returns
            res_scale * CADB(...) + F_in instead of eq. 11's CADB(...) + F_in (docs/architecture.md,
            "Training stability"). 1 is the paper's equation; our training options use 0.1.
            Default: 1.0.
    """

    def __init__(self,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=32,
                 num_levels=4,
                 kernel_sizes=(1, 3, 5),
                 dilated=False,
                 attention='ca+sa',
                 num_subspaces=8,
                 reduction=4,
                 mab_variant='M5',
                 level_down=True,
                 level_up=True,
                 level_dense=True,
                 res_scale=1.0):
        super().__init__()
        if not isinstance(num_levels, int) or num_levels < 1:
            raise ValueError(f'num_levels must be an integer >= 1, got {num_levels!r}')
        if num_out_ch != num_in_ch:
            raise ValueError(f'num_out_ch must equal num_in_ch={num_in_ch} (the output is I - R), got {num_out_ch}')
        if isinstance(res_scale, bool) or not isinstance(res_scale, (int, float)) or not 0 < res_scale <= 1:
            raise ValueError(f'res_scale must be a number in (0, 1], got {res_scale!r}')
        if mab_variant not in MAB_VARIANTS:
            raise ValueError(f'mab_variant must be one of {", ".join(MAB_VARIANTS)} (paper Table 5); '
                             f'got {mab_variant!r}')
        self.num_levels = num_levels
        self.attention = attention
        self.level_down = level_down
        self.level_up = level_up
        self.level_dense = level_dense
        attn = dict(attention=attention, num_subspaces=num_subspaces, reduction=reduction)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        # nodes (i, j) in computing order: column by column, so M(i + 1, j - 1) exists before M(i, j)
        levels = num_levels if level_up else 1
        self.nodes = [(i, j) for j in range(num_levels) for i in range(min(levels, num_levels - j))]
        self.mab = nn.ModuleDict({
            f'{i}_{j}': MAB(num_feat, kernel_sizes, dilated, **MAB_VARIANTS[mab_variant], **attn, res_scale=res_scale)
            for i, j in self.nodes
        })
        self.down = nn.ModuleDict({
            f'{i}': FusionBlock(2, num_feat, **attn)
            for i, j in self.nodes if level_down and i > 0 and j == 0
        })
        self.fuse = nn.ModuleDict({
            f'{i}_{j}': FusionBlock(len(self._same_level(j)) + int(level_up), num_feat, **attn)
            for i, j in self.nodes if j > 0
        })
        self.head = FusionBlock(num_levels, num_feat, **attn)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)

    @property
    def pad_multiple(self):
        """The multiple that inputs are reflect-padded to, 2^(num_levels - 1) (tiling keeps to it)."""
        return 2**(self.num_levels - 1)

    def _same_level(self, j):
        """Columns of a level's nodes fused into its node of column j: all earlier ones, or the newest."""
        return list(range(j)) if self.level_dense else [j - 1]

    def forward(self, x):
        h, w = x.shape[-2:]
        multiple = self.pad_multiple
        if min(h, w) < multiple // 2 + 1:  # reflect padding must be smaller than the image
            raise ValueError(f'DSMNet with num_levels={self.num_levels} needs images of at least '
                             f'{multiple // 2 + 1} x {multiple // 2 + 1} pixels, got {h} x {w}')
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode='reflect').contiguous(memory_format=torch.channels_last)
        coarsest = x.shape[0] * (x.shape[-2] // multiple) * (x.shape[-1] // multiple)
        if self.training and coarsest == 1 and 'sa' in self.attention.split('+'):
            raise ValueError(f'DSMNet in train mode needs more than one value per channel for the BatchNorm of '
                             f'the subspace attention at the coarsest level: batch 1 of {h} x {w} gives 1 x 1 at '
                             f'level {self.num_levels - 1}; use batch >= 2 or patches over {multiple} pixels')

        scales = [_conv_act(self.conv_first, x)]  # scale space S_0 .. S_(L-1)
        for _ in range(1, self.num_levels):
            scales.append(F.avg_pool2d(scales[-1], 2))

        out = {}
        for i, j in self.nodes:
            if j == 0:
                feat, scales[i] = scales[i], None  # S_i is used once: not kept to the end
                if self.level_down and i > 0:
                    feat = self.down[f'{i}']([F.avg_pool2d(out[i - 1, 0], 2), feat])
            else:
                feats = [out[i, c] for c in self._same_level(j)]
                if self.level_up:
                    size = out[i, 0].shape[-2:]
                    feats.append(F.interpolate(out[i + 1, j - 1], size=size, mode='bilinear', align_corners=False))
                feat = self.fuse[f'{i}_{j}'](feats)
            out[i, j] = self.mab[f'{i}_{j}'](feat)

        rain = self.conv_last(self.head([out[0, j] for j in range(self.num_levels)]))
        return (x - rain)[..., :h, :w].contiguous()  # B = I - R


if ARCH_REGISTRY is not None:
    ARCH_REGISTRY.register()(DSMNet)


def args_from_state_dict(state):
    """DSMNet constructor arguments read off a state dict (the weight layout above).

    Returns only the arguments the keys determine; the others (mab_variant and res_scale among them) cannot be
    told from the weights. Raises ``ValueError`` for a state dict that is not DSMNet's.
    """
    if not {'conv_first.weight', 'conv_last.weight', 'mab.0_0.cadb.conv.weight'} <= set(state):
        raise ValueError('the state dict has no conv_first / conv_last / mab.0_0 weights of a DSMNet')
    num_feat, num_in_ch = state['conv_first.weight'].shape[:2]
    args = dict(num_in_ch=num_in_ch, num_out_ch=state['conv_last.weight'].shape[0], num_feat=num_feat)
    args['num_levels'] = len({k.split('.')[1] for k in state if k.startswith('mab.0_')})
    prefix = 'mab.0_0.conv_a.k'
    kernels = {int(k[len(prefix):].split('.')[0]): v.shape[-1] for k, v in state.items()
               if k.startswith(prefix) and k.endswith('.weight')}
    args['kernel_sizes'] = list(kernels)  # state-dict order = the branch order of the MAB
    if any(k > 3 for k in kernels):
        args['dilated'] = all(size == 3 for k, size in kernels.items() if k > 3)
    branches = {name for name in ('ca', 'sp', 'sa') if any(k.startswith(f'mab.0_0.cadb.{name}.') for k in state)}
    args['attention'] = next((a for a in ATTENTIONS if set(a.split('+')) == branches), None)
    if args['attention'] is None:
        raise ValueError(f'no known attention branches in mab.0_0.cadb (found {sorted(branches)})')
    if 'ca' in branches:
        args['reduction'] = num_feat // state['mab.0_0.cadb.ca.mlp.0.weight'].shape[0]
    if 'sa' in branches:
        args['num_subspaces'] = state['mab.0_0.cadb.sa.pw.weight'].shape[0]
    if args['num_levels'] > 1:
        args['level_up'] = any(k.startswith('mab.1_') for k in state)
        if args['level_up']:
            args['level_down'] = any(k.startswith('down.') for k in state)
    if args['num_levels'] > 2:
        fused = state['fuse.0_2.conv.weight'].shape[1] // num_feat  # (2 if dense else 1) + level_up
        args['level_dense'] = fused - args['level_up'] == 2  # level_up is read for num_levels > 1
    return args
