"""The GPU paths on a CUDA device: training in fp32, bf16 and fp16, agreement with the CPU, memory format,
the inference command, torchrun on nccl, resuming across devices, and torch.compile.

Every test here is marked ``cuda`` and skipped when ``torch.cuda.is_available()`` is false, so the suite
stays green on CPU machines. ``pytest -m cuda tests/test_cuda.py`` runs them alone; ``bash
scripts/gpu_check.sh`` runs them and the GPU benchmark. Sizes are small: all of them take a few minutes.
"""
import copy
import json
import math
import textwrap

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import dsmnet_arch.infer as infer
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.tiling import count_tiles, free_memory

from conftest import (
    RECORDER,
    batch,
    channels_last_by_block,
    derain_model,
    randomised,
    run_entry,
    smooth_image,
    train_options,
    write_yaml,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU: torch.cuda.is_available() is False'),
]
BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
PRECISIONS = ['fp32', pytest.param('bf16', marks=pytest.mark.skipif(not BF16, reason='needs a GPU with bfloat16')),
              'fp16']
SMALL = dict(num_feat=16, num_levels=3, num_subspaces=4)  # the network of tests/archs/test_fast_equivalence.py
MINIMAL = dict(type='DSMNet', num_feat=8, num_levels=1, num_subspaces=4, kernel_sizes=[3], attention='sa')


@pytest.mark.parametrize('precision', PRECISIONS)
def test_training_steps_lower_the_loss(precision):
    """30 DerainModel steps on one batch: the loss falls below 0.3 of its start (on the CPU: 0.06 in fp32,
    bf16 and fp16 alike); weights stay fp32; fp16 runs with a gradient scaler."""
    model = derain_model(num_gpu=1, amp=False if precision == 'fp32' else precision)
    assert model.device.type == 'cuda' and all(p.is_cuda for p in model.net_g.parameters())
    assert (model.scaler is not None) == (precision == 'fp16')
    model.feed_data(batch())
    losses = []
    for it in range(1, 31):
        model.optimize_parameters(it)
        losses.append(model.log_dict['l_pix'])
    assert all(np.isfinite(losses)) and losses[-1] < 0.3 * losses[0], losses
    assert model.output.is_cuda and all(p.dtype == torch.float32 for p in model.net_g.parameters())
    if precision == 'fp16':
        assert model.log_dict['grad_scale'] > 0


def test_fp32_forward_and_backward_agree_with_the_cpu(monkeypatch):
    """Same weights, same input: output within 1e-4, every gradient within 1e-3 of its largest entry, the
    BatchNorm statistics within 1e-5 (fp32 sums in another order). TF32 off: PyTorch lets cuDNN use it for
    fp32 convolutions on Ampere and later (10-bit mantissas)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    torch.manual_seed(0)
    cpu = randomised(DSMNet(**SMALL)).train()
    gpu = copy.deepcopy(cpu).cuda()
    x, target = torch.rand(2, 3, 40, 36), torch.rand(2, 3, 40, 36)
    out_cpu, out_gpu = cpu(x), gpu(x.cuda())
    assert (out_gpu.cpu() - out_cpu).abs().max() < 1e-4
    F.mse_loss(out_cpu, target).backward()
    F.mse_loss(out_gpu, target.cuda()).backward()
    for (key, p), q in zip(gpu.named_parameters(), cpu.parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        assert (p.grad.cpu() - q.grad).abs().max() / scale < 1e-3, key
    for (key, b), c in zip(gpu.named_buffers(), cpu.buffers()):
        assert torch.allclose(b.cpu().float(), c.float(), atol=1e-5), key


@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
@pytest.mark.parametrize('train', [False, True])
def test_every_block_stays_channels_last(train, precision):
    """As tests/archs/test_fast_equivalence.py checks on the CPU: no block hands NCHW on (batch 1 in eval mode,
    the usual inference case; batch 2 in train mode)."""
    torch.manual_seed(0)
    net = DSMNet(**SMALL).cuda().train(train)
    with torch.set_grad_enabled(train), torch.autocast('cuda', dtype=torch.float16, enabled=precision == 'fp16'):
        formats = channels_last_by_block(net, torch.rand(2 if train else 1, 3, 16, 16, device='cuda'))
    assert len(formats) > 50 and [name for name, ok in formats.items() if not ok] == []


@pytest.fixture(scope='module')
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('weights') / 'net_g.pth'
    torch.save({'params': DSMNet(num_feat=8, num_levels=2, num_subspaces=4).state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('precision', ['fp32', 'tf32', *PRECISIONS[1:]])
def test_derain_command_on_cuda_in_batches_of_tiles(tmp_path, small_weights, precision, monkeypatch):
    """dsmnet-derain --device cuda: 12 tiles in batches of 4, against the CPU's fp32 result, 8-bit outputs.

    fp32 with TF32 off: within one level, under 1 % of the pixels off at all; fp32 with TF32 allowed (PyTorch's
    default on Ampere and later: 10-bit mantissas in the convolutions, as fp16), bf16 and fp16: a mean
    difference under 2 levels, the bound of bf16 on the CPU (tests/test_infer.py).
    """
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', precision != 'fp32')
    image = (smooth_image(150, 200) * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'rain.png'), image)
    assert count_tiles(150, 200, 64, 16, 2) == 12
    args = ['-i', tmp_path / 'rain.png', '--weights', small_weights, '--tile', '64', '--tile-overlap', '16',
            '--batch', '4']
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'cpu', '--device', 'cpu']]) == 0
    calls, forward = [], DSMNet.forward

    def recorded(self, x):
        calls.append((x.shape[0], x.device.type))
        return forward(self, x)

    monkeypatch.setattr(DSMNet, 'forward', recorded)
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'gpu', '--device', 'cuda', '--precision',
                                               precision.replace('tf32', 'fp32')]]) == 0
    assert calls == [(4, 'cuda')] * 3
    cpu = cv2.imread(str(tmp_path / 'cpu' / 'rain.png')).astype(np.int16)
    gpu = cv2.imread(str(tmp_path / 'gpu' / 'rain.png')).astype(np.int16)
    diff = np.abs(gpu - cpu)
    if precision == 'fp32':
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (diff.max(), (diff > 0).mean())
    else:
        assert diff.mean() < 2, diff.mean()


def test_auto_tile_is_sized_from_the_gpus_free_memory(tmp_path, small_weights):
    """--tile auto on a GPU: the whole image when it fits half the free memory, else the largest tile whose
    batch does; fp16 activations cost less per pixel than fp32."""
    device = torch.device('cuda')
    free = free_memory(device)
    assert 0 < free <= torch.cuda.get_device_properties(device).total_memory
    model = infer.build_model(small_weights)
    derain = infer.Deraining(model, device, tile='auto', batch_size=4, multiple=2)
    assert derain.tile_for(256, 256) is None
    per_pixel = derain._bytes_per_pixel
    side = int(math.sqrt(4 * free / per_pixel))  # an image whose activations need 4x the free memory
    tile = derain.tile_for(side, side)
    budget = infer.MEMORY_SHARE * free_memory(device)
    assert tile is not None and 4 * tile**2 * per_pixel <= budget * 1.05  # the free memory moves a little
    assert 4 * (tile + 64)**2 * per_pixel > budget * 0.95  # the largest multiple of 32 that fits
    half = infer.Deraining(model, device, 'fp16', tile='auto', batch_size=4, multiple=2)
    half.tile_for(side, side)
    assert 0 < half._bytes_per_pixel < per_pixel

    cv2.imwrite(str(tmp_path / 'rain.png'), (smooth_image(120, 90) * 255).round().astype(np.uint8))
    args = ['-i', tmp_path / 'rain.png', '--weights', small_weights, '--device', 'cuda']
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'auto', '--tile', 'auto']]) == 0
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'whole', '--tile', '0']]) == 0
    auto = cv2.imread(str(tmp_path / 'auto' / 'rain.png')).astype(np.int16)
    whole = cv2.imread(str(tmp_path / 'whole' / 'rain.png')).astype(np.int16)
    assert np.abs(auto - whole).max() <= 1  # one pass over the whole image both times (cuDNN may round otherwise)


@pytest.mark.slow  # torchrun, two processes
def test_torchrun_on_nccl_with_one_process_per_gpu(tmp_path, toy_data):
    """dsmnet_arch/train.py --launcher pytorch under torchrun, nccl, as many processes as GPUs: the weights
    are equal on all ranks and in the checkpoint, and lie on each rank's GPU."""
    nproc = torch.cuda.device_count()
    (tmp_path / 'recorder.py').write_text(RECORDER)
    opt = train_options(toy_data, name='ddp_cuda', total_iter=4, num_gpu=nproc)
    opt['datasets']['train'].update(batch_size_per_gpu=2, dataset_enlarge_ratio=nproc)  # every rank gets batches
    yml = write_yaml(tmp_path / 'ddp.yml', opt)
    proc = run_entry(['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', 'recorder.py',
                      '-opt', yml, '--launcher', 'pytorch'], cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f'rank{r}.json')) for r in range(nproc)]
    assert all(r['backend'] == 'nccl' and len(r['samples']) == 4 for r in ranks)
    weights = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in range(nproc)]
    assert all(v.device == torch.device('cuda', r) for r, w in enumerate(weights) for v in w.values())
    trained = torch.load(tmp_path / 'experiments' / 'ddp_cuda' / 'models' / 'net_g_latest.pth',
                         weights_only=True)['params']
    for w in weights:
        assert all(torch.equal(w[k].cpu(), trained[k]) for k in w)  # the parameters (the recorder saves those)
    log = open(next((tmp_path / 'experiments' / 'ddp_cuda').glob('train_ddp_cuda_*.log'))).read()
    assert f'World size (gpu number): {nproc}' in log


# Runs dsmnet_arch/train.py and writes where the trained model's tensors ended up (devices.json).
RUNNER = textwrap.dedent('''
    import json, sys
    import dsmnet_arch
    from dsmnet_arch.models.derain_model import DerainModel

    seen = []
    step = DerainModel.optimize_parameters
    def optimize_parameters(self, current_iter):
        seen[:] = [self]
        step(self, current_iter)
    DerainModel.optimize_parameters = optimize_parameters
    sys.argv[0] = 'train.py'
    from dsmnet_arch.train import main
    main()
    model = seen[0]
    adam = model.optimizer_g.state_dict()['state'].values()
    json.dump({'params': sorted({p.device.type for p in model.net_g.parameters()}),
               'exp_avg': sorted({s['exp_avg'].device.type for s in adam}),
               'step': sorted({s['step'].device.type for s in adam}),
               'scale': model.scaler.get_scale() if model.scaler is not None else None}, open('devices.json', 'w'))
''')


def _train(tmp_path, args):
    proc = run_entry([str(tmp_path / 'runner.py'), *args], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.load(open(tmp_path / 'devices.json')), proc.stdout + proc.stderr


@pytest.mark.slow  # two trainings in subprocesses
@pytest.mark.parametrize('first,then', [('cpu', 'cuda'), ('cuda', 'cpu')])
def test_a_training_state_resumes_on_the_other_device(tmp_path, toy_data, first, then):
    """2 iterations on one device, --auto_resume on the other to 4: weights, Adam's moments on the new
    device, Adam's step counters on the CPU as in a fresh run."""
    (tmp_path / 'runner.py').write_text(RUNNER)
    num_gpu = {'cpu': 0, 'cuda': 1}
    yml = write_yaml(tmp_path / 'move.yml', train_options(toy_data, name='move', total_iter=2, num_gpu=num_gpu[first]))
    devices, _ = _train(tmp_path, ['-opt', yml])
    assert devices['params'] == devices['exp_avg'] == [first]
    devices, output = _train(tmp_path, ['-opt', yml, '--auto_resume', '--force_yml', f'num_gpu={num_gpu[then]}',
                                        'train:total_iter=4'])
    assert 'Resuming training from epoch: ' in output and 'iter: 2.' in output
    assert devices['params'] == devices['exp_avg'] == [then] and devices['step'] == ['cpu']
    assert (tmp_path / 'experiments' / 'move' / 'models' / 'net_g_4.pth').exists()


@pytest.mark.slow  # two trainings in subprocesses
def test_fp16_scaler_state_is_saved_and_resumed(tmp_path, toy_data):
    (tmp_path / 'runner.py').write_text(RUNNER)
    yml = write_yaml(tmp_path / 'fp16.yml', train_options(toy_data, name='fp16', total_iter=2, num_gpu=1, amp='fp16'))
    devices, output = _train(tmp_path, ['-opt', yml])
    assert 'Mixed precision: autocast fp16 with a gradient scaler' in output and devices['scale'] > 0
    path = tmp_path / 'experiments' / 'fp16' / 'training_states' / '2.state'
    state = torch.load(path, weights_only=True)
    state['scaler']['scale'] = 1024.0  # a mark: a fresh scaler starts at 65536
    torch.save(state, path)
    devices, output = _train(tmp_path, ['-opt', yml, '--auto_resume', '--force_yml', 'train:total_iter=4'])
    assert 256.0 <= devices['scale'] <= 1024.0  # restored (halved once per overflowing step, if any)
    assert 'grad_scale: ' in output


@pytest.mark.slow  # inductor compiles for the GPU
def test_compiled_training_on_cuda_follows_eager():
    """train: compile: true with inductor on the GPU (the smallest DSMNet, to keep compiling short)."""
    models = {name: derain_model(num_gpu=1, network=MINIMAL, compile=name == 'compiled')
              for name in ('compiled', 'eager')}
    assert isinstance(models['compiled'].net_g, torch._dynamo.eval_frame.OptimizedModule)
    losses = {}
    for name, model in models.items():
        model.feed_data(batch())
        losses[name] = []
        for it in range(1, 6):
            model.optimize_parameters(it)
            losses[name].append(model.log_dict['l_pix'])
    assert np.allclose(losses['compiled'], losses['eager'], rtol=1e-3), losses  # fused kernels round otherwise
    assert losses['compiled'][-1] < losses['compiled'][0]
    bare = models['compiled'].get_bare_model(models['compiled'].net_g)
    assert type(bare) is DSMNet and not any(k.startswith('_orig_mod') for k in bare.state_dict())
