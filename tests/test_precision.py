"""dsmnet_arch.precision: which precision runs where (fp32, bf16, fp16 on CPUs and GPUs) and the train: amp option
(DerainModel training in mixed precision: tests/models/test_derain_model_amp.py)."""
import pytest
import torch

from dsmnet_arch.precision import supported, train_precision


@pytest.mark.parametrize('train_opt,device,expected', [
    ({}, 'cpu', None), ({'amp': False}, 'cpu', None), ({'amp': 'bf16'}, 'cpu', 'bf16'),
    ({'bf16': True}, 'cpu', 'bf16'), ({'bf16': True, 'amp': 'bf16'}, 'cpu', 'bf16'), ({'bf16': False}, 'cpu', None),
    ({'amp': 'fp16'}, 'cuda', 'fp16'),
    ({'amp': 'fp16'}, 'cpu', 'train:amp: fp16 needs a CUDA GPU'), ({'amp': 'float16'}, 'cpu', 'must be one of'),
    ({'amp': True}, 'cpu', 'must be one of'), ({'bf16': True, 'amp': 'fp16'}, 'cuda', 'contradicts'),
])
def test_amp_option(train_opt, device, expected):
    """amp: bf16|fp16|false, and the older bf16: true; fp16 off a CUDA GPU is a one-line error."""
    if expected in (None, 'bf16', 'fp16'):
        assert train_precision(train_opt, torch.device(device)) == expected
    else:
        with pytest.raises(ValueError, match=expected) as err:
            train_precision(train_opt, torch.device(device))
        assert '\n' not in str(err.value)


def test_one_rule_says_which_precision_runs_where(monkeypatch):
    """fp16 on CUDA GPUs only; bf16 on CPUs, and on GPUs only with native bfloat16 (not emulated)."""
    cpu, gpu = torch.device('cpu'), torch.device('cuda', 0)
    asked = []
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: asked.append(
        including_emulation) or False)
    assert [supported(p, cpu) for p in ('fp32', 'bf16', 'fp16')] == [True, True, False]
    assert [supported(p, gpu) for p in ('fp32', 'bf16', 'fp16')] == [True, False, True]
    assert asked == [False]  # emulated bf16 does not count
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert supported('bf16', gpu)


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    from dsmnet_arch.precision import cpu_flags

    x86 = tmp_path / 'x86'
    x86.write_text('processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n')
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU part\t: 0xd40\n')
    assert cpu_flags(str(x86)) == {'fpu', 'avx2', 'avx512f', 'avx512_bf16'}
    assert cpu_flags(str(arm)) == {'fp', 'asimd', 'bf16', 'i8mm'}
    assert cpu_flags(str(tmp_path / 'none')) == set()  # macOS, Windows: no such file


@pytest.mark.parametrize('flags,device,expected', [
    ({'avx512_bf16'}, 'cpu', 'bf16'), ({'amx_bf16'}, 'cpu', 'bf16'), ({'bf16'}, 'cpu', 'bf16'),
    ({'avx512f', 'avx2'}, 'cpu', 'fp32'), (set(), 'cpu', 'fp32'), ({'avx512_bf16'}, 'cuda', 'fp32'),
])
def test_auto_precision_is_bf16_only_on_cpus_with_native_bfloat16(monkeypatch, flags, device, expected):
    import dsmnet_arch.precision as precision

    monkeypatch.setattr(precision, 'cpu_flags', lambda: flags)
    assert precision.auto_precision(torch.device(device)) == expected
