"""Print parameters and GMACs of DSM-Net and of its ablation variants as a markdown table.

    python scripts/model_complexity.py [--size 256] [--num-feat 32]

MACs come from ``torch.utils.flop_counter`` (FLOPs / 2) for one forward pass of a 1 x 3 x size x
size image; it counts convolutions and matrix products (all of DSM-Net's arithmetic but the
element-wise, pooling, normalisation and softmax operations). Models are built on the ``meta``
device, so nothing is computed and the table prints in seconds.

Variants: the paper's ablations, each changing one argument of the default model (paper Table 3:
attention; Table 4: num_subspaces; Table 5: mab_variant M1-M5, the connections inside the MAB
as the paper's table defines them), dilated kernels, and the network-level links of our
reconstruction (level_down, level_up, level_dense; not a paper ablation). The table names each
Table 5 variant's connections. The five have the same weights and convolutions: their rows agree.
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from dsmnet_arch.archs.dsmnet_arch import ATTENTIONS, MAB_VARIANTS, DSMNet


def variants():
    """(name, constructor overrides of the default DSMNet) for every row of the table."""
    rows = [('default (ca+sa, n=8, M5)', {})]
    rows += [(f'attention={a}', dict(attention=a)) for a in ATTENTIONS if a != 'ca+sa']
    rows += [(f'num_subspaces={n}', dict(num_subspaces=n)) for n in (4, 16)]
    for name, flags in MAB_VARIANTS.items():
        on = [k for k, v in flags.items() if v]
        rows.append((f'mab_variant={name} ({", ".join(on) if on else "no connection"})', dict(mab_variant=name)))
    rows.append(('dilated=True', dict(dilated=True)))
    rows += [(f'{link}=False', {link: False}) for link in ('level_down', 'level_up', 'level_dense')]
    return rows


def complexity(size, **kwargs):
    """Parameters and multiply-accumulates of DSMNet(**kwargs) for one size x size RGB image."""
    with torch.device('meta'):
        model = DSMNet(**kwargs).eval()
        x = torch.empty(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return params, counter.get_total_flops() / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256, help='image side in pixels (default 256)')
    parser.add_argument('--num-feat', type=int, default=32, help='num_feat of every variant (default 32)')
    args = parser.parse_args(argv)

    print(f'| variant | params | GMACs at {args.size}x{args.size} |')
    print('|---|---:|---:|')
    for name, overrides in variants():
        params, macs = complexity(args.size, num_feat=args.num_feat, **overrides)
        print(f'| {name} | {params:,} | {macs / 1e9:.3f} |')


if __name__ == '__main__':
    main()
