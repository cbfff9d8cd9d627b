"""dsmnet_arch.benchmarks.report: the rows only a GPU or --compile run prints, from a run's results."""
from dsmnet_arch.benchmarks.report import table as results_table


def test_gpu_header_compiled_rows_and_no_data_in_the_table():
    """The rows only a GPU or --compile run prints, from a run's results (no GPU needed to format them)."""
    reference = dict(shape=[1, 32, 512, 512], memory_format='channels_last', seconds=0.002, gflops=9000.0)
    train = dict(shape=[32, 3, 64, 64], seconds=0.1, iters_per_s=10.0, patches_per_s=320.0, gflop=1200.0,
                 gflops=12000.0, fraction=0.8, peak_bytes=3 * 2**30, first_call_seconds=None)
    whole = dict(shape=[1, 3, 512, 512], seconds=0.01, ms_per_mp=38.1, gflops=8000.0, fraction=0.9,
                 peak_bytes=2**30, first_call_seconds=None)
    results = dict(
        header=dict(date='today', command='python scripts/benchmark.py --device cuda --compile --no-data',
                    device='cuda', device_name='A GPU', precision='bf16', threads=16, torch='2.x', repeats=3,
                    load_average=None, malloc='keeps freed memory', glibc_tunables=None,
                    gpu=dict(memory_bytes=80 * 2**30, capability='8.0', cuda='12.x', cudnn=90100,
                             cudnn_benchmark=True, tf32_convolutions=True)),
        reference=dict(train=reference, inference=reference), train_step=train,
        protocol=[dict(dataset='Rain100H', total_iter=1125000, batch=32, seconds=112500.0)], inference=[whole],
        tiled=dict(shape=[1, 3, 3000, 4000], tile=[560, 560], batch=4, overlap=64, tiles=48,
                   computed_pixels_ratio=1.25, seconds=1.0, ms_per_mp=83.3, ratio_to_largest_whole=2.2,
                   peak_bytes=2**31),
        compiled=dict(train_step=dict(train, seconds=0.08, iters_per_s=12.5, speedup=1.25, first_call_seconds=95.0),
                      inference=dict(whole, speedup=1.1, first_call_seconds=40.0)))
    table = results_table(results)
    assert '- GPU: 80 GiB, compute capability 8.0, CUDA 12.x, cuDNN 90100, cudnn.benchmark True, TF32 ' in table
    assert '| 0.10 s | 10.00 it/s, 320.0 patches/s | 12000.0 | 0.80 | 3,072 MiB |' in table
    assert '| paper protocol, Rain100H: 1,125,000 iterations x the step above | batch 32 | 31.2 h |' in table
    assert '48 tiles of 560 x 560 in batches of 4' in table and 'data, ' not in table
    assert '| training step, torch.compile (first step 95 s) | 32 x 3 x 64 x 64 | 0.08 s | 1.25x eager, ' in table
    assert '| inference, torch.compile (first call 40 s) | 1 x 3 x 512 x 512 | 38 ms/MP | 1.10x eager, ' in table
