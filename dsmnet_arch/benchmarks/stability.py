"""Stability benchmark: does DSM-Net train at the paper's learning rate, seed after seed?

    python scripts/stability_benchmark.py --seeds 0 1 2 --iters 1000 --label clip --out stability
    python scripts/stability_benchmark.py --seeds 0 1 2 --iters 1000 --label none \\
        --set train:grad_clip_norm=null --out stability
    python scripts/stability_benchmark.py --plot stability --png docs/images/stability.png

Each run trains a :class:`~dsmnet_arch.models.derain_model.DerainModel` in this process with the
``train`` and ``network_g`` sections of a training options file (default: the Rain100H one, the
paper's optimiser and loss), ``--set`` overrides, on random ``--crop`` crops with horizontal flips
of the photographs scikit-image ships with the package's synthetic rain (light and heavy), and
records per iteration the loss, the gradient norm before clipping and the largest absolute output
of any MAB. The divergence guard is taken out unless ``--guard`` is given: the benchmark measures
the training itself. A run counts as diverged at the first iteration whose loss is non-finite or
above 10 x the median of the previous 100 (the guard's default rule); it stops once the loss is
non-finite or above ``--dead``. At the end it scores the network on held-out photographs (the
demo's validation photos, rain of another seed) by PSNR on Y, beside the rainy input's.
One JSON per run goes to ``--out`` (``<label>_seed<seed>.json``); ``--plot`` draws every JSON of a
folder as one picture of loss curves.
"""
import argparse
import glob
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import yaml

REPO_OPTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'options')
TRAIN_PHOTOS = ('astronaut', 'coffee', 'camera', 'brick', 'grass', 'gravel', 'hubble_deep_field')
HELD_OUT_PHOTOS = ('chelsea', 'rocket')  # the demo's validation photographs
RAIN = (('light', 0), ('heavy', 1), ('light', 2), ('heavy', 3))  # preset and seed offset of each rendering


def photograph(name):
    """A scikit-image photograph as an 8-bit RGB array ``H x W x 3`` (grey ones replicated)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
    return img


def rainy_pairs(names, seed):
    """(rainy, clean) float tensors (3, H, W) for each photograph and each rendering of :data:`RAIN`."""
    from dsmnet_arch.data.rain_synthesis import synthesize_rain

    pairs = []
    for index, name in enumerate(names):
        clean = photograph(name)
        for preset, offset in RAIN:
            rainy, _ = synthesize_rain(clean, preset, seed=[seed, index, offset])
            pairs.append(tuple(torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255
                               for a in (rainy, clean)))
    return pairs


def random_batches(pairs, batch, crop, seed):
    """Endless batches of random ``crop`` x ``crop`` crops of random pairs, flipped left-right half of the time."""
    gen = torch.Generator().manual_seed(seed)

    def draw(high):
        return int(torch.randint(high, (1, ), generator=gen))

    while True:
        lq, gt = [], []
        for _ in range(batch):
            rainy, clean = pairs[draw(len(pairs))]
            y, x = draw(rainy.shape[1] - crop + 1), draw(rainy.shape[2] - crop + 1)
            flip = draw(2)
            for out, img in ((lq, rainy), (gt, clean)):
                img = img[:, y:y + crop, x:x + crop]
                out.append(img.flip(-1) if flip else img)
        yield {'lq': torch.stack(lq), 'gt': torch.stack(gt)}


def _set(opt, assignment):
    """Apply one ``--set section:key[:key]=value`` (value read as YAML; ``null`` removes the key)."""
    keys, _, value = assignment.partition('=')
    *path, last = keys.split(':')
    node = opt
    for key in path:
        node = node.setdefault(key, {})
    value = yaml.safe_load(value)
    if isinstance(value, str):  # PyYAML reads 3e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def build_model(options_file, overrides, seed, guard=False, device='cpu', scale_init=()):
    """A DerainModel with the ``network_g`` and ``train`` sections of ``options_file`` (plus ``overrides``);
    ``scale_init``: ``(suffix, factor)`` pairs, the initial weight and bias of every module whose name ends with
    ``suffix`` multiplied by ``factor`` (an initialisation candidate)."""
    from dsmnet_arch.models.derain_model import DerainModel

    with open(options_file) as f:
        src = yaml.safe_load(f)
    opt = dict(name='stability', model_type='DerainModel', scale=1, num_gpu=int(device != 'cpu'), is_train=True,
               dist=False, network_g=src['network_g'], train=src['train'],
               path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None))
    if not guard:
        opt['train'].pop('guard', None)
    for assignment in overrides:
        _set(opt, assignment)
    torch.manual_seed(seed)
    model = DerainModel(opt)
    with torch.no_grad():
        for name, module in model.get_bare_model(model.net_g).named_modules():
            for suffix, factor in scale_init:
                if name.endswith(suffix):
                    for param in module.parameters(recurse=False):
                        param.mul_(factor)
    return model, opt


def _watch(net, trace):
    """Forward hooks that keep the largest |output| of the last forward pass: of any MAB (key ``mab``) and, with
    ``trace``, of every MAB, CADB, attention branch and fusion convolution by name."""
    from dsmnet_arch.archs.dsmnet_arch import CADB, MAB, ChannelAttention, SubspaceAttention

    peaks = {}

    def hook(name, is_mab):
        def keep(module, inputs, output):
            value = output.detach().abs().max().item()
            if trace:
                peaks[name] = value
            if is_mab:
                peaks['mab'] = max(peaks.get('mab', 0.0), value)
        return keep

    for name, module in net.named_modules():
        if isinstance(module, MAB) or (trace and (isinstance(module, (CADB, ChannelAttention, SubspaceAttention))
                                                  or name.endswith('conv_fuse'))):
            module.register_forward_hook(hook(name, isinstance(module, MAB)))
    return peaks


def diverged_at(losses, ratio=10.0, window=100):
    """The first iteration (1-based) whose loss is non-finite or above ``ratio`` x the median of the previous
    ``window`` losses (at least 10 of them), or ``None``."""
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            return i + 1
        previous = losses[max(0, i - window):i]
        if len(previous) >= 10 and loss > ratio * statistics.median(previous):
            return i + 1
    return None


@torch.no_grad()
def psnr_y(model, pairs):
    """Mean PSNR on Y (BasicSR's ``calculate_psnr`` with ``test_y_channel``: the unrounded Y of 8-bit images)
    of the network's output and of the rainy input."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    net = model.get_bare_model(model.net_g)
    was_training = net.training
    net.eval()
    scores = {'output': [], 'input': []}
    for rainy, clean in pairs:
        with torch.no_grad():
            out = net(rainy[None].to(model.device)).cpu()
        gt = tensor2img(clean[None])
        for key, img in (('output', out), ('input', rainy[None])):
            scores[key].append(calculate_psnr(tensor2img(img), gt, crop_border=0, test_y_channel=True))
    net.train(was_training)
    return {key: float(np.mean(values)) for key, values in scores.items()}


def run(args, seed, train_pairs, held_out):
    """One seed on the rendered ``train_pairs``: train, record, score on ``held_out``; returns the record (also
    written as JSON under ``args.out``)."""
    os.makedirs(args.out, exist_ok=True)
    model, opt = build_model(args.options, args.set, seed, guard=args.guard, device=args.device,
                             scale_init=args.scale_init)
    peaks = _watch(model.get_bare_model(model.net_g), args.trace)
    batches = random_batches(train_pairs, args.batch, args.crop, seed)
    curves = {'loss': [], 'grad_norm': [], 'mab_peak': [], 'trace': []}
    start = time.perf_counter()
    for it in range(1, args.iters + 1):
        model.update_learning_rate(it, warmup_iter=opt['train'].get('warmup_iter', -1))  # BasicSR's loop order
        model.feed_data(next(batches))
        peaks.clear()
        model.optimize_parameters(it)
        curves['loss'].append(float(model.log_dict['l_pix']))
        curves['grad_norm'].append(float(model.log_dict.get('grad_norm', float('nan'))))
        curves['mab_peak'].append(peaks.pop('mab'))
        if args.trace:
            curves['trace'].append(dict(peaks))
        if args.keep_states and it % args.keep_states == 0:
            torch.save(dict(iter=it, params=model.get_bare_model(model.net_g).state_dict()),
                       os.path.join(args.out, f'{args.label}_seed{seed}_iter{it}.pth'))
        if it % args.print_freq == 0:
            print(f'[{args.label} seed {seed}] iter {it}: loss {curves["loss"][-1]:.4g}, grad norm '
                  f'{curves["grad_norm"][-1]:.3g}, peak |MAB out| {curves["mab_peak"][-1]:.3g}', flush=True)
        loss = curves['loss'][-1]
        if not math.isfinite(loss) or loss > args.dead:
            break
    seconds = time.perf_counter() - start
    record = dict(label=args.label, seed=seed, options=os.path.basename(args.options), overrides=args.set,
                  scale_init=args.scale_init,
                  guard=args.guard, batch=args.batch, crop=args.crop, iters=args.iters, done=len(curves['loss']),
                  seconds_per_iter=seconds / len(curves['loss']), diverged_at=diverged_at(curves['loss']),
                  train=opt['train'], **curves)
    final_finite = all(torch.isfinite(p).all() for p in model.net_g.parameters())
    record['psnr_y'] = psnr_y(model, held_out) if final_finite else None
    with open(os.path.join(args.out, f'{args.label}_seed{seed}.json'), 'w') as f:
        json.dump(record, f)
    return record


def plot(folder, png):
    """Loss curves of every run recorded in ``folder``, one colour per label, as one picture."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    records = [json.load(open(path)) for path in sorted(glob.glob(os.path.join(folder, '*.json')))]
    labels = sorted({r['label'] for r in records})
    colours = dict(zip(labels, plt.rcParams['axes.prop_cycle'].by_key()['color']))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    labelled = set()  # one legend entry per label
    for r in records:
        x = np.arange(1, len(r['loss']) + 1)
        label = None if r['label'] in labelled else r['label']
        labelled.add(r['label'])
        for ax, key in zip(axes, ('loss', 'mab_peak')):
            ax.plot(x, r[key], color=colours[r['label']], lw=0.8, alpha=0.8, label=label)
    axes[0].set(yscale='log', xlabel='iteration', ylabel='training loss (MSE + 0.2 (1 - SSIM))')
    axes[1].set(yscale='log', xlabel='iteration', ylabel='largest |MAB output|')
    axes[0].legend(fontsize=7, ncol=3, loc='upper right')
    for ax in axes:
        ax.grid(alpha=0.3)
    first = records[0]
    seeds = sorted({sum(r['label'] == label for r in records) for label in labels})
    fig.suptitle(f'DSM-Net ({first["options"]}), batch {first["batch"]} of {first["crop"]}x{first["crop"]}, '
                 f'{"-".join(map(str, sorted({seeds[0], seeds[-1]})))} seed(s) per setting', fontsize=10)
    fig.savefig(png, dpi=110)
    return records


def summary(records):
    """A markdown table: one row per run."""
    rows = ['| setting | seed | iterations run | diverged at | final loss | PSNR-Y BasicSR out / in (dB) | s / iter |',
            '|---|---:|---:|---:|---:|---:|---:|']
    for r in sorted(records, key=lambda r: (r['label'], r['seed'])):
        psnr = f'{r["psnr_y"]["output"]:.2f} / {r["psnr_y"]["input"]:.2f}' if r['psnr_y'] else 'weights not finite'
        rows.append(f'| {r["label"]} | {r["seed"]} | {r["done"]} | {r["diverged_at"] or "-"} | {r["loss"][-1]:.4g} '
                    f'| {psnr} | {r["seconds_per_iter"]:.2f} |')
    return '\n'.join(rows)


def _scale_init(text):
    suffix, _, factor = text.partition('=')
    try:
        return suffix, float(factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected SUFFIX=FACTOR, e.g. conv_fuse=0.1; got {text!r}') from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--options', default=os.path.join(REPO_OPTIONS, 'train_DSMNet_Rain100H.yml'),
                        help='training options file whose network_g and train sections are used')
    parser.add_argument('--set', action='append', default=[], metavar='SECTION:KEY=VALUE',
                        help='override an option (YAML value; null removes it), e.g. train:grad_clip_norm=null')
    parser.add_argument('--label', default='run', help='name of this setting in the files and the plot')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=1000)
    parser.add_argument('--batch', type=int, default=8, help='default 8 (the paper trains with 32)')
    parser.add_argument('--crop', type=int, default=64)
    parser.add_argument('--dead', type=float, default=1e3, help='stop a run once its loss is above this')
    parser.add_argument('--guard', action='store_true', help="keep the options file's train:guard")
    parser.add_argument('--scale-init', action='append', default=[], type=_scale_init, metavar='SUFFIX=FACTOR',
                        help='multiply the initial weights of the modules whose name ends with SUFFIX, e.g. '
                        'conv_fuse=0.1 (every MAB\'s fusion convolution)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--trace', action='store_true', help='record the peak |output| of every MAB, CADB and branch')
    parser.add_argument('--keep-states', type=int, default=0, metavar='K',
                        help='save the weights every K iterations beside the JSON (for a closer look)')
    parser.add_argument('--print-freq', type=int, default=50)
    parser.add_argument('--out', default='stability', help='folder of the JSON records')
    parser.add_argument('--plot', metavar='FOLDER', help='draw the runs recorded in FOLDER and print their table')
    parser.add_argument('--png', default='stability.png', help='picture written by --plot')
    args = parser.parse_args(argv)
    if args.plot:
        print(summary(plot(args.plot, args.png)))
        print(f'wrote {args.png}')
        return
    import dsmnet_arch  # noqa: F401  (BasicSR fixes, registries)
    from dsmnet_arch.utils import keep_freed_memory

    keep_freed_memory()
    train_pairs, held_out = rainy_pairs(TRAIN_PHOTOS, seed=0), rainy_pairs(HELD_OUT_PHOTOS, seed=1)  # for all seeds
    records = [run(args, seed, train_pairs, held_out) for seed in args.seeds]
    print(summary(records))


if __name__ == '__main__':
    main()
