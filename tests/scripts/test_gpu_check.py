"""scripts/gpu_check.sh on a machine without a GPU, and the summary it prints from its steps, tests and benchmarks."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, load_script


@pytest.mark.slow  # the script in a shell, its checks in subprocesses: 7 s
@pytest.mark.skipif(torch.cuda.is_available(), reason='with a GPU the script runs the whole check')
def test_without_cuda_the_check_stops_with_one_message(tmp_path):
    """With an interpreter that has everything (this one), nothing is installed and the check ends cleanly."""
    env = dict(os.environ, DSMNET_PYTHON=sys.executable, DSMNET_WHEELS=str(tmp_path / 'no-wheels'),
               GPU_CHECK_OUT=str(tmp_path / 'out'))
    (tmp_path / 'no-wheels').mkdir()  # an empty index: a missing module would fail, not be downloaded
    proc = subprocess.run(['bash', os.path.join(REPO, 'scripts', 'gpu_check.sh')], env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert output.strip().splitlines()[-1].startswith(f'gpu_check: PyTorch {torch.__version__} (built for CUDA ')
    assert 'sees no CUDA device, so there is nothing to check' in output and 'installing' not in output
    assert (tmp_path / 'out' / 'gpu_check.log').exists() and not (tmp_path / 'out' / 'steps.tsv').exists()


def benchmark_json(precision, compile=False, complete=True):
    """What scripts/benchmark.py --device cuda writes (the keys the summary reads), with round figures."""
    gpu = dict(memory_bytes=80 * 2**30, capability='9.0', cuda='12.8', cudnn=91000, cudnn_benchmark=True,
               tf32_convolutions=True)
    step = dict(seconds=0.05, iters_per_s=20.0, fraction=0.5, peak_bytes=3 * 2**30)
    whole = dict(shape=[1, 3, 512, 512], seconds=0.004, fraction=0.6)
    results = dict(
        header=dict(device_name='A GPU', precision=precision, preset='full', compile=compile, complete=complete,
                    torch='2.x', date='2026-12-01T10:00:00', gpu=gpu),
        reference=dict(train=dict(gflops=20000.0), inference=dict(shape=[1, 32, 512, 512], gflops=25000.0)),
        train_step=step, inference=[dict(whole, shape=[1, 3, 256, 256]), whole],
        protocol=[dict(seconds=iters * 0.05) for iters in (1125000, 125000, 218750, 3937500)])
    if complete:
        results['tiled'] = dict(ms_per_mp=20.0)
    if compile:
        results['compiled'] = dict(train_step=dict(step, seconds=0.04, iters_per_s=25.0, speedup=1.25,
                                                   first_call_seconds=70.0))
    return results


JUNIT = '''<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="17"><testcase classname="tests.test_cuda" name="test_a"/><testcase classname="tests.test_cuda"
name="test_b"><failure message="assert False"/></testcase><testcase classname="tests.test_cuda" name="test_c">
<skipped message="needs a GPU with bfloat16"/></testcase></testsuite></testsuites>'''


def test_summary_of_steps_tests_and_benchmarks(tmp_path):
    script = load_script('gpu_check_summary')
    (tmp_path / 'steps.tsv').write_text('CUDA tests\t1\t150\t210\nbenchmark fp32\t0\t95\t120\n'
                                        'benchmark bf16\t0\t40\t60\nbenchmark fp32, compiled\t124\t90\t90\n')
    (tmp_path / 'cuda_tests.xml').write_text(JUNIT)
    for name, results in (('fp32', benchmark_json('fp32')), ('bf16', benchmark_json('bf16')),
                          ('fp32_compiled', benchmark_json('fp32', compile=True, complete=False))):
        (tmp_path / f'benchmark_{name}.json').write_text(json.dumps(results))
    text, ok = script.summary(str(tmp_path))
    assert not ok
    lines = text.splitlines()
    assert lines[0] == '# gpu_check: A GPU, 80 GiB, compute capability 9.0; torch 2.x, CUDA 12.8, 2026-12-01T10:00:00'
    assert ('| CUDA tests | 15 passed, 1 failed, 1 skipped: test_b (skipped: needs a GPU with bfloat16) '
            '| 150 s |') in lines
    assert '| benchmark fp32, compiled | timed out after 90 s | 90 s |' in lines
    rows = [line for line in lines if line.startswith(('| fp32', '| bf16'))]
    assert rows[0] == ('| fp32 | 20,000.0 | 50.0 ms | 20.0 | 0.50 | 3.00 GiB | 4.0 ms | 0.60 | 20 | 15.6 h | 1.7 h '
                       '| 3.0 h | 2.3 days |')
    assert rows[1].startswith('| bf16 | 20,000.0 | 50.0 ms |')
    assert rows[2] == ('| fp32, compiled (cut short) | 20,000.0 | 40.0 ms (1.25x eager; first step 70 s) | 25.0 | 0.50 '
                       '| 3.00 GiB |  |  |  |  |  |  |  |')

    (tmp_path / 'steps.tsv').write_text('CUDA tests\t0\t150\t210\nbenchmark fp32\t0\t95\t120\n')
    (tmp_path / 'cuda_tests.xml').write_text(JUNIT.replace('failures="1"', 'failures="0"').replace(
        '<failure message="assert False"/>', ''))
    for name in ('bf16', 'fp32_compiled'):
        (tmp_path / f'benchmark_{name}.json').unlink()
    assert script.summary(str(tmp_path))[1]
    assert script.main([str(tmp_path)]) == 0
