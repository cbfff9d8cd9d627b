"""dsmnet_arch.benchmarks.profile: operator times from the profiler, the share outside convolutions, the CPU's
vector extensions."""
import pytest
import torch
from torch.nn import functional as F

from dsmnet_arch.benchmarks.profile import VECTOR_FLAGS, is_convolution, operator_times, summary, vector_extensions


def test_operator_times_separate_convolutions_from_the_rest():
    x = torch.rand(1, 8, 64, 64)
    w = torch.rand(8, 8, 3, 3)

    def fn():
        y = F.conv2d(x, w, padding=1)
        for _ in range(5):
            y = y.exp()  # five passes that are not convolutions

    times = operator_times(fn, torch.device('cpu'))
    assert times['aten::exp'][1] == 5 and times['aten::exp'][0] > 0
    convs = [name for name in times if is_convolution(name)]
    assert convs and all(times[name][1] >= 1 for name in convs)
    s = summary(times, top=3)
    outside = sum(sec for name, (sec, _) in times.items() if not is_convolution(name))
    assert s['seconds'] == pytest.approx(sum(sec for sec, _ in times.values()))
    assert s['outside_convolutions'] == pytest.approx(outside / s['seconds'])
    assert len(s['top']) == 3 and s['top'][0]['seconds'] == max(sec for sec, _ in times.values())
    assert [op['seconds'] for op in s['top']] == sorted((op['seconds'] for op in s['top']), reverse=True)


def test_summary_of_made_up_times():
    times = {'aten::mkldnn_convolution': (3.0, 10), 'aten::convolution_backward': (4.0, 10), 'aten::add_': (2.0, 50),
             'mkldnn::_convolution_pointwise': (1.0, 4), 'aten::max_pool2d_with_indices': (0.5, 2)}
    s = summary(times, top=2)
    assert s['seconds'] == 10.5 and s['outside_convolutions'] == pytest.approx(2.5 / 10.5)
    assert [(op['name'], op['calls']) for op in s['top']] == [('aten::convolution_backward', 10),
                                                              ('aten::mkldnn_convolution', 10)]
    assert summary({})['outside_convolutions'] == 0.0


def test_vector_extensions_in_order_of_the_list():
    flags = {'sse2', 'avx512_bf16', 'avx2', 'amx_bf16', 'fpu'}
    v = vector_extensions(flags)
    assert v['flags'] == ['avx2', 'avx512_bf16', 'amx_bf16']
    assert v['flags'] == [f for f in VECTOR_FLAGS if f in flags]
    assert v['torch_capability'] == torch.backends.cpu.get_cpu_capability()
    assert vector_extensions(set())['flags'] == []
