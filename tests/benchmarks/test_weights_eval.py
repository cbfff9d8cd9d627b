"""dsmnet_arch.benchmarks.weights_eval: the validation curve read off a BasicSR training log."""
from dsmnet_arch.benchmarks.weights_eval import validation_curve

LOG = """2026-12-07 01:40:24,650 INFO: [train..][epoch:  0, iter:      20, lr:(1.000e-03,)] l_pix: 7.3e-02
2026-12-07 01:47:00,166 INFO: [train..][epoch:  0, iter:     100, lr:(1.000e-03,)] l_pix: 6.5e-02
2026-12-07 01:47:10,000 INFO: Validation synthetic_val
\t # psnr_y: 27.2348\tBest: 27.2348 @ 100 iter
\t # ssim_y: 0.8000\tBest: 0.8000 @ 100 iter
2026-12-07 02:50:50,343 INFO: [train..][epoch: 14, iter:   1,500, lr:(2.500e-04,)] l_pix: 2.0e-02
2026-12-07 02:50:55,000 INFO: Validation synthetic_val
\t # psnr_y: 33.2603\tBest: 33.3457 @ 1300 iter
2026-12-07 02:50:58,591 INFO: End of training. Time consumed: 1:09:48
2026-12-07 02:50:59,000 INFO: Validation synthetic_val
\t # psnr_y: 33.2603\tBest: 33.3457 @ 1300 iter
"""


def test_validation_curve_takes_each_validation_once_with_its_iteration(tmp_path):
    (tmp_path / 'train.log').write_text(LOG)
    assert validation_curve(tmp_path / 'train.log') == [(100, 27.2348), (1500, 33.2603)]
