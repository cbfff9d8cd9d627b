"""Reports the demo's result: rainy input vs derained, and where the outputs are.

    python scripts/demo_report.py [--train_opt options/train_DSMNet_demo.yml] [--test_opt options/test_DSMNet_demo.yml]

Reads the two options files to find everything (run from the folder the demo ran in, as BasicSR
puts its outputs under the current directory): the validation pairs, the derained images that
``dsmnet_arch/test.py`` wrote, the trained weights and the tensorboard log. It computes PSNR and
SSIM on Y and on RGB (no border crop) with BasicSR's own metrics, for the rainy input and for
the derained output against the clean image, prints a table, and writes one side-by-side image
``rainy | derained | clean`` per validation image to ``results/<test name>/comparison/``.
"""
import argparse
import os
import sys

import cv2
import numpy as np
import yaml

if __package__ in (None, ''):  # run as a file: import the package from this checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dsmnet_arch  # noqa: E402,F401  (BasicSR fixes before basicsr is imported)

from basicsr.metrics import calculate_psnr, calculate_ssim  # noqa: E402

METRICS = (('PSNR-Y', calculate_psnr, True), ('SSIM-Y', calculate_ssim, True), ('PSNR-RGB', calculate_psnr, False),
           ('SSIM-RGB', calculate_ssim, False))


def load_options(path):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f'demo_report: cannot read options file {path}: {err}')


def read_image(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f'demo_report: cannot read {path}; did training and testing finish?')
    return img


def scores(img, clean):
    """PSNR/SSIM of ``img`` against ``clean`` (BGR uint8), in the order of METRICS."""
    return [fn(img, clean, crop_border=0, test_y_channel=y) for _, fn, y in METRICS]


def labelled(img, text):
    """``img`` with a black strip above it holding ``text``."""
    strip = np.zeros((28, img.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, img], axis=0)


def comparison(rainy, derained, clean, rainy_psnr, derained_psnr):
    """Side-by-side ``rainy | derained | clean`` with captions and 4-pixel white gaps."""
    gap = np.full((rainy.shape[0] + 28, 4, 3), 255, np.uint8)
    panels = [
        labelled(rainy, f'rainy input  {rainy_psnr:.2f} dB (Y)'), gap,
        labelled(derained, f'DSM-Net  {derained_psnr:.2f} dB (Y)'), gap,
        labelled(clean, 'clean')
    ]
    return np.concatenate(panels, axis=1)


def table(rows):
    """Text table of ``[(label, [metric values])]``."""
    head = f"{'':28s}" + ''.join(f'{name:>10s}' for name, _, _ in METRICS)
    lines = [head, '-' * len(head)]
    for label, values in rows:
        lines.append(f'{label:28s}' + ''.join(f'{v:10.2f}' if 'PSNR' in name else f'{v:10.4f}'
                                              for (name, _, _), v in zip(METRICS, values)))
    return '\n'.join(lines)


def report(train_opt_path, test_opt_path):
    """Prints the table and the output locations; returns the mean scores ``(rainy, derained)``."""
    train_opt, test_opt = load_options(train_opt_path), load_options(test_opt_path)
    dataset = next(iter(test_opt['datasets'].values()))
    suffix = test_opt['val'].get('suffix') or test_opt['name']
    results_root = os.path.join('results', test_opt['name'])
    derained_dir = os.path.join(results_root, 'visualization', dataset['name'])
    comparison_dir = os.path.join(results_root, 'comparison')
    os.makedirs(comparison_dir, exist_ok=True)

    names = sorted(os.listdir(dataset['dataroot_gt']))
    if not names:
        raise SystemExit(f"demo_report: no images in {dataset['dataroot_gt']}")
    rows, per_image = [], {'rainy': [], 'derained': []}
    for name in names:
        stem = os.path.splitext(name)[0]
        clean = read_image(os.path.join(dataset['dataroot_gt'], name))
        rainy = read_image(os.path.join(dataset['dataroot_lq'], name))
        derained = read_image(os.path.join(derained_dir, f'{stem}_{suffix}.png'))
        rainy_scores, derained_scores = scores(rainy, clean), scores(derained, clean)
        per_image['rainy'].append(rainy_scores)
        per_image['derained'].append(derained_scores)
        rows += [(f'{stem}: rainy input', rainy_scores), (f'{stem}: derained', derained_scores)]
        cv2.imwrite(
            os.path.join(comparison_dir, f'{stem}.png'),
            comparison(rainy, derained, clean, rainy_scores[0], derained_scores[0]))
    rainy_mean = np.mean(per_image['rainy'], axis=0)
    derained_mean = np.mean(per_image['derained'], axis=0)
    mean = f'mean ({len(names)} images)'
    rows += [(f'{mean}: rainy', rainy_mean), (f'{mean}: derained', derained_mean)]

    experiment = os.path.join('experiments', train_opt['name'])
    print(f"\nDSM-Net demo: validation photographs never seen in training ({dataset['dataroot_gt']})\n")
    print(table(rows))
    print(f'\nPSNR-Y gain: {derained_mean[0] - rainy_mean[0]:+.2f} dB, '
          f'SSIM-Y gain: {derained_mean[1] - rainy_mean[1]:+.4f}\n')
    print(f'comparison images (rainy | derained | clean): {comparison_dir}/')
    print(f'derained images:                            {derained_dir}/')
    print(f"trained weights:                            {os.path.join(experiment, 'models', 'net_g_latest.pth')}")
    print(f'training log and options:                   {experiment}/')
    tb_dir = os.path.join('tb_logger', train_opt['name'])
    print(f'tensorboard log:                            {tb_dir}/  (tensorboard --logdir {tb_dir})')
    print(f"derain your own photos:                     python -m dsmnet_arch.infer -i PHOTOS -o OUTDIR "
          f"--weights {os.path.join(experiment, 'models', 'net_g_latest.pth')}")
    return rainy_mean, derained_mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--train_opt', default='options/train_DSMNet_demo.yml', help='training options file')
    parser.add_argument('--test_opt', default='options/test_DSMNet_demo.yml', help='test options file')
    args = parser.parse_args()
    report(args.train_opt, args.test_opt)


if __name__ == '__main__':
    main()
