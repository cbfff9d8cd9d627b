"""BasicSR model for real rainy photos without clean images: derain, save, and score the input and the output."""
import csv
import os
from os import path as osp

import numpy as np

from dsmnet_arch.models.derain_model import DerainModel

from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY

#: Appended to a metric's name for its score of the rainy input.
INPUT_SUFFIX = '_input'


@MODEL_REGISTRY.register()
class RealRainModel(DerainModel):
    """:class:`DerainModel` whose validation scores the rainy input as well as the derained output.

    Made for folders of real rainy photos (BasicSR's ``SingleImageDataset``) and no-reference
    metrics (BasicSR's ``calculate_niqe``; lower is better): every metric ``X`` of ``val:metrics``
    is logged as ``X_input`` (the rainy input) and ``X`` (the derained output, the name BasicSR
    gives it), as the mean over the images, and per image into
    ``<visualization>/<dataset>_scores.csv``. With paired data, full-reference metrics score both
    against the clean image. The derained images are saved where BasicSR's ``SRModel`` saves them.
    There is no best-metric record: this is a model for testing.

    A metric that fails on an image or gives a non-finite score stops the run with an error naming
    the image (NIQE needs at least two 96 x 96 blocks, e.g. 96 x 192 pixels).
    """

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metrics = self.opt['val'].get('metrics') or {}
        names = [name + side for name in metrics for side in (INPUT_SUFFIX, '')]
        rows = []
        for data in dataloader:
            image_path = data['lq_path'][0]
            img_name = osp.splitext(osp.basename(image_path))[0]
            self.feed_data(data)
            self.test()
            visuals = self.get_current_visuals()
            reference = {'img2': tensor2img([visuals['gt']])} if 'gt' in visuals else {}
            images = {INPUT_SUFFIX: tensor2img([visuals['lq']]), '': tensor2img([visuals['result']])}
            del self.lq, self.output
            if hasattr(self, 'gt'):
                del self.gt
            if save_img:
                imwrite(images[''], self._result_path(img_name, dataset_name, current_iter))
            rows.append([img_name] + [
                _score(name, metrics[name], dict(img=images[side], **reference), image_path)
                for name in metrics for side in (INPUT_SUFFIX, '')])
        if not metrics:
            return
        self.metric_results = dict(zip(names, np.mean([row[1:] for row in rows], axis=0).tolist()))
        self._write_scores(osp.join(self.opt['path']['visualization'], f'{dataset_name}_scores.csv'), names, rows)
        get_root_logger().info(f'Validation {dataset_name}\n'
                               + ''.join(f'\t # {k}: {v:.4f}\n' for k, v in self.metric_results.items()))
        if tb_logger:
            for name, value in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{name}', value, current_iter)

    def _result_path(self, img_name, dataset_name, current_iter):
        """Where BasicSR's SRModel saves a derained image: per image while training, per dataset when testing."""
        folder = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(folder, img_name, f'{img_name}_{current_iter}.png')
        return osp.join(folder, dataset_name, f'{img_name}_{self.opt["val"].get("suffix") or self.opt["name"]}.png')

    @staticmethod
    def _write_scores(path, names, rows):
        """One line per image: its name, then each metric of the input and of the output."""
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['image'] + names)
            writer.writerows([row[0]] + [f'{value:.6f}' for value in row[1:]] for row in rows)


def _score(name, metric_opt, data, image_path):
    """``val:metrics:<name>`` of ``data``; ValueError naming the image if the metric fails or is not finite."""
    height, width = data['img'].shape[:2]
    hint = ' (NIQE needs at least two 96x96 blocks, e.g. 96x192)' if metric_opt.get('type') == 'calculate_niqe' else ''
    try:
        value = float(calculate_metric(data, metric_opt))
    except (ValueError, RuntimeError) as err:  # numpy's LinAlgError is a ValueError
        raise ValueError(f'val:metrics:{name} cannot score {image_path} ({height}x{width}): {err}{hint}') from None
    if not np.isfinite(value):
        raise ValueError(f'val:metrics:{name} of {image_path} ({height}x{width}) is {value}{hint}')
    return value
