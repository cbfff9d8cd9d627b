"""dsmnet_arch.benchmarks.timing: one duration format for the benchmarks, the reproduction's estimate and the GPU
summary."""
from dsmnet_arch.benchmarks.timing import duration


def test_one_duration_for_the_benchmarks_the_estimate_and_the_gpu_summary():
    seconds = (0, 12.4, 250, 3599, 3600, 112500, 47.9 * 3600, 48 * 3600, 2.3 * 86400)
    assert [duration(s) for s in seconds] == ['0 s', '12 s', '4 min 10 s', '59 min 59 s', '1.0 h', '31.2 h',
                                              '47.9 h', '2.0 days', '2.3 days']
