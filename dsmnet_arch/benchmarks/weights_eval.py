"""How well trained weights derain photographs they never saw, whole or tiled, in fp32 or bf16.

    python scripts/evaluate_weights.py                                    # the bundled weights
    python scripts/evaluate_weights.py --weights W.pth --label mine --compare-to other.pth

Held-out photographs (the demo's validation photos, never trained on by the demo or the bundled weights)
get rain from two renderers: the package's own synthesizer (light and heavy presets, other seeds than
training) and another library's, kornia's ``RandomRain`` (drops of a random length and slant drawn as
lines), so that the figures also say what happens on rain the weights were not trained to undo.

- ``held_out``: PSNR-Y / SSIM-Y (BasicSR's, unrounded Y) of the rainy input and of the output, per weights.
- ``large`` (``--large``): upscaled held-out photographs (about 1 and 2 MP) with kornia's rain, derained
  whole and tiled at 64, 128 and 256: whether whole photos need statistics over windows of the training
  size (NAFNet's TLC idea; DSM-Net's channel attention and subspace softmax see the whole image).
- ``precision``: seconds for a 512 x 512 image in fp32 and in bf16 (best of ``--repeats``), and the PSNR
  between the two outputs on the held-out photographs.
"""
import argparse
import json
import time

import numpy as np
import torch

HELD_OUT = ('chelsea', 'rocket')
#: kornia RandomRain settings per 100,000 pixels (drops scale with the area) and the drops' size ranges.
KORNIA_RAIN = {'kornia-light': dict(drops=250, height=(8, 16), width=(-2, 2)),
               'kornia-heavy': dict(drops=700, height=(14, 28), width=(-4, 4))}
LARGE = (('rocket', 2), ('chelsea', 4))  # photograph, upscaling factor: 1.1 and 2.2 MP
TILES = (None, 256, 128, 64)


def photo(name, scale=1):
    """A scikit-image photograph (:func:`~dsmnet_arch.benchmarks.stability.photograph`) as float RGB in [0, 1],
    ``H x W x 3``, upscaled (bicubic) by ``scale``."""
    import cv2

    from dsmnet_arch.benchmarks.stability import photograph

    img = photograph(name)
    if scale != 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return img.astype(np.float32) / 255


def kornia_rain(clean, setting, seed):
    """``clean`` with kornia's rain of ``setting`` (a key of :data:`KORNIA_RAIN`), seeded."""
    import kornia.augmentation as K

    cfg = KORNIA_RAIN[setting]
    drops = int(cfg['drops'] * clean.shape[0] * clean.shape[1] / 1e5)
    torch.manual_seed(seed)
    rain = K.RandomRain(p=1.0, number_of_drops=(drops, drops + 1), drop_height=cfg['height'],
                        drop_width=cfg['width'])
    return rain(torch.from_numpy(clean).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()


def package_rain(clean, preset, seed):
    """``clean`` with the package's synthetic rain of ``preset``, seeded."""
    from dsmnet_arch.data.rain_synthesis import synthesize_rain

    rainy, _ = synthesize_rain((clean * 255).round().astype(np.uint8), preset, seed=seed)
    return rainy.astype(np.float32) / 255


def renderings(seed=100):
    """(photo, rain, rainy, clean) for each held-out photograph and each rain: the package's light and heavy
    presets and kornia's two settings; seeds other than any training data's."""
    out = []
    for index, name in enumerate(HELD_OUT):
        clean = photo(name)
        for preset in ('light', 'heavy'):
            out.append((name, preset, package_rain(clean, preset, [seed, index]), clean))
        for setting in KORNIA_RAIN:
            out.append((name, setting, kornia_rain(clean, setting, seed + index), clean))
    return out


def scores(img, clean):
    """PSNR-Y and SSIM-Y (BasicSR's functions on 8-bit images, no border crop) of float RGB ``img``."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    def to8(x):
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)[..., ::-1]  # BGR, as BasicSR reads

    a, b = to8(img), to8(clean)
    return calculate_psnr(a, b, 0, test_y_channel=True), calculate_ssim(a, b, 0, test_y_channel=True)


def deraining(model, precision='fp32', tile=None):
    """The inference command's :class:`~dsmnet_arch.infer.Deraining` of ``model`` on the CPU."""
    from dsmnet_arch.infer import DEFAULT_OVERLAP, Deraining

    overlap = min(DEFAULT_OVERLAP, tile // 4) if tile else DEFAULT_OVERLAP
    return Deraining(model, torch.device('cpu'), precision, tile, overlap, 1, model.pad_multiple)


def run_rgb(derain, rgb):
    """Derain float RGB ``rgb`` with a :class:`Deraining` (which takes and gives BGR; no autograd)."""
    return derain(np.ascontiguousarray(rgb[..., ::-1]))[..., ::-1]


def held_out(weights_by_label, pairs):
    """Rows of PSNR-Y / SSIM-Y of the rainy input and each weights' output on every rendering."""
    from dsmnet_arch.loading import build_model

    rows = []
    for label, weights in weights_by_label.items():
        derain = deraining(build_model(weights))
        for name, rain, rainy, clean in pairs:
            out = run_rgb(derain, rainy)
            rows.append(dict(weights=label, photo=name, rain=rain, input=scores(rainy, clean),
                             output=scores(out, clean)))
    return rows


def large(weights, seed=200):
    """Whole vs tiled on upscaled held-out photographs with kornia's heavy rain: PSNR-Y and seconds per tile."""
    from dsmnet_arch.loading import build_model

    model = build_model(weights)
    rows = []
    for name, scale in LARGE:
        clean = photo(name, scale)
        rainy = kornia_rain(clean, 'kornia-heavy', seed)
        for tile in TILES:
            derain = deraining(model, tile=tile)
            start = time.perf_counter()
            out = run_rgb(derain, rainy)
            rows.append(dict(photo=f'{name} x{scale}', pixels=clean.shape[0] * clean.shape[1], tile=tile or 'whole',
                             seconds=time.perf_counter() - start, input=scores(rainy, clean)[0],
                             output=scores(out, clean)[0]))
    return rows


def precision(weights, pairs, repeats):
    """fp32 vs bf16: seconds for a 512 x 512 image (best of ``repeats`` after a warm-up,
    :func:`~dsmnet_arch.benchmarks.timing.best_time`) and the PSNR (RGB, 8-bit) between the two outputs on each
    held-out rendering."""
    from dsmnet_arch.benchmarks.timing import best_time
    from dsmnet_arch.loading import build_model

    from basicsr.metrics import calculate_psnr

    model = build_model(weights)
    runs = {p: deraining(model, p) for p in ('fp32', 'bf16')}
    image = photo('astronaut')[:512, :512]
    seconds = {p: best_time(lambda d=derain: run_rgb(d, image), repeats, torch.device('cpu'))
               for p, derain in runs.items()}
    agreement = []
    for name, rain, rainy, _ in pairs:
        a, b = (np.clip(run_rgb(runs[p], rainy), 0, 1) for p in ('fp32', 'bf16'))
        agreement.append(dict(photo=name, rain=rain, max_abs=float(np.abs(a - b).max()),
                              psnr=calculate_psnr(a * 255, b * 255, 0)))
    return dict(seconds_512=seconds, agreement=agreement)


def validation_curve(log_path):
    """(iteration, PSNR-Y) of every validation in a BasicSR training log (the metric ``psnr_y`` of the options)."""
    import re

    points, iteration = [], None
    with open(log_path, encoding='utf-8') as f:
        for line in f:
            found = re.search(r'iter:\s*([\d,]+),', line)
            if found:
                iteration = int(found.group(1).replace(',', ''))
            found = re.search(r'# psnr_y: ([\d.]+)', line)
            if found and iteration is not None and (not points or points[-1][0] != iteration):
                points.append((iteration, float(found.group(1))))
    return points


def plot_curve(log_path, val_dir, png):
    """The held-out PSNR-Y of a training run over its iterations (from its log), beside the rainy input's mean
    PSNR-Y over the pairs of ``val_dir`` (``input/`` and ``target/``), as one picture."""
    import glob
    import os

    import cv2
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    from basicsr.metrics import calculate_psnr

    points = validation_curve(log_path)
    rainy = [calculate_psnr(cv2.imread(path), cv2.imread(os.path.join(val_dir, 'target', os.path.basename(path))), 0,
                            test_y_channel=True) for path in sorted(glob.glob(os.path.join(val_dir, 'input', '*')))]
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.plot(*zip(*points), marker='o', ms=3, label='derained (validation during training)')
    ax.axhline(np.mean(rainy), color='grey', ls='--', label='rainy input')
    ax.set(xlabel='iteration', ylabel='mean PSNR-Y (dB), held-out photos', title='Bundled weights: training run')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(png, dpi=110)
    return points, float(np.mean(rainy))


def markdown(result):
    """The tables of a result, as markdown."""
    lines = ['| weights | photo | rain | PSNR-Y in | PSNR-Y out | gain | SSIM-Y in | SSIM-Y out |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in result['held_out']:
        (pi, si), (po, so) = r['input'], r['output']
        lines.append(f'| {r["weights"]} | {r["photo"]} | {r["rain"]} | {pi:.2f} | {po:.2f} | {po - pi:+.2f} '
                     f'| {si:.4f} | {so:.4f} |')
    for label in dict.fromkeys(r['weights'] for r in result['held_out']):
        for family in ('package', 'kornia'):
            mine = [r for r in result['held_out'] if r['weights'] == label and r['rain'].startswith('kornia') ==
                    (family == 'kornia')]
            gain = np.mean([r['output'][0] - r['input'][0] for r in mine])
            ssim = np.mean([r['output'][1] - r['input'][1] for r in mine])
            lines.append(f'| {label} | mean | {family} rain | | | {gain:+.2f} | | {ssim:+.4f} (gain) |')
    if result.get('large'):
        lines += ['', '| photo | pixels | tile | PSNR-Y in | PSNR-Y out | seconds |', '|---|---:|---|---:|---:|---:|']
        lines += [f'| {r["photo"]} | {r["pixels"] / 1e6:.1f} MP | {r["tile"]} | {r["input"]:.2f} | {r["output"]:.3f} '
                  f'| {r["seconds"]:.1f} |' for r in result['large']]
    if result.get('precision'):
        p = result['precision']
        lines += ['', f'512 x 512: fp32 {p["seconds_512"]["fp32"]:.2f} s, bf16 {p["seconds_512"]["bf16"]:.2f} s',
                  '', '| photo | rain | bf16 vs fp32: largest difference | PSNR between them |', '|---|---|---:|---:|']
        lines += [f'| {a["photo"]} | {a["rain"]} | {a["max_abs"]:.4f} | {a["psnr"]:.2f} |' for a in p['agreement']]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--weights', help='weights to evaluate (default: the bundled ones)')
    parser.add_argument('--label', default='bundled')
    parser.add_argument('--compare-to', action='append', default=[], metavar='LABEL=WEIGHTS',
                        help='more weights for the held-out table, e.g. demo=experiments/.../net_g_latest.pth')
    parser.add_argument('--large', action='store_true', help='also whole vs tiled on 1-2 MP photographs')
    parser.add_argument('--precision', action='store_true', help='also fp32 vs bf16')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--json', help='also write the figures to this JSON file')
    parser.add_argument('--curve', nargs=3, metavar=('LOG', 'VAL_DIR', 'PNG'),
                        help="only draw a training run's validation PSNR-Y from its BasicSR log")
    args = parser.parse_args(argv)
    import dsmnet_arch  # noqa: F401  (BasicSR fixes, registries)
    if args.curve:
        points, rainy = plot_curve(*args.curve)
        print('\n'.join(f'iteration {i}: PSNR-Y {v:.2f} dB' for i, v in points) + f'\nrainy input: {rainy:.2f} dB')
        return
    from dsmnet_arch.loading import weights_or_bundled

    try:
        weights = weights_or_bundled(args.weights, program='evaluate_weights')
    except ValueError as err:
        parser.error(str(err))
    others = dict(item.split('=', 1) for item in args.compare_to)
    pairs = renderings()
    result = dict(weights=weights, held_out=held_out({args.label: weights, **others}, pairs))
    if args.large:
        result['large'] = large(weights)
    if args.precision:
        result['precision'] = precision(weights, pairs, args.repeats)
    print(markdown(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
