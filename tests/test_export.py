"""``python -m dsmnet_arch.export``: the ONNX graph against PyTorch with onnxruntime, odd sizes, tiles, refusals."""
import os
import stat

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from dsmnet_arch import export
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.checkpoint import arch_record
from dsmnet_arch.loading import build_model
from dsmnet_arch.tiling import tiled_forward

from conftest import run_entry

#: A paper Table 5 variant other than the default: the graph must follow the checkpoint's record.
NETWORK = dict(type='DSMNet', num_feat=8, num_levels=3, num_subspaces=4, mab_variant='M3')
#: onnxruntime vs PyTorch, float32 images in [0, 1] (measured: about 1e-7).
ATOL = 1e-5


def derain_visibly(net):
    """Random BatchNorm statistics and a 20x head: a freshly initialised DSMNet returns nearly its
    input, which would hide a wrong graph; these weights change the image a lot."""
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    net.conv_last.weight.data.mul_(20)
    return net


def write_weights(path, **overrides):
    """A checkpoint as DerainModel writes it: params and the arch record."""
    torch.manual_seed(0)
    network = {**NETWORK, **overrides}
    net = derain_visibly(DSMNet(**{k: v for k, v in network.items() if k != 'type'}))
    torch.save({'params': net.state_dict(), 'arch': arch_record(network, DSMNet)}, path)
    return path


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """The weights and their export through the command, run as the docs say."""
    folder = tmp_path_factory.mktemp('export')
    weights, onnx_path = write_weights(folder / 'net_g_latest.pth'), folder / 'dsmnet.onnx'
    proc = run_entry(['-m', 'dsmnet_arch.export', '--weights', str(weights), '--onnx', str(onnx_path)], cwd=folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'max |ONNX - PyTorch|' in proc.stdout and not proc.stderr.strip()  # no exporter warnings
    return weights, onnx_path


def onnx_runner(path):
    """The exported graph as a function of a PyTorch batch, as docs/export.md uses it with tiled_forward."""
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return lambda batch: torch.from_numpy(session.run(None, {'input': batch.numpy()})[0])


@pytest.mark.slow  # the module fixture exports in a subprocess: 6 s
def test_onnx_matches_pytorch_on_odd_and_even_sizes(exported):
    weights, onnx_path = exported
    model, run = build_model(str(weights)), onnx_runner(onnx_path)
    default_variant = DSMNet(**{k: v for k, v in NETWORK.items() if k not in ('type', 'mab_variant')}).eval()
    default_variant.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(2)
    for shape in ((1, 3, 37, 53), (2, 3, 64, 48)):  # odd: padded to a multiple of 4 inside the graph; even: not
        x = torch.rand(shape, generator=generator)
        with torch.no_grad():
            expected, other = model(x), default_variant(x)
        got = run(x)
        assert got.shape == shape
        assert (expected - x).abs().mean() > 0.1  # the weights change the image: the comparison means something
        assert (got - expected).abs().max() <= ATOL
        assert (got - other).abs().max() > 1e-2  # M3, as recorded, not the default M5 the weights alone give

    proto = onnx.load(str(onnx_path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['batch', 3, 'height', 'width']
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata['dsmnet_pad_multiple'] == '4' and metadata['dsmnet_min_side'] == '3'
    assert metadata['source_weights'] == 'net_g_latest.pth'


@pytest.mark.slow  # the same export, if it runs first
def test_tiled_onnx_equals_tiled_pytorch(exported):
    weights, onnx_path = exported
    model = build_model(str(weights))
    img = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    tiles = dict(tile=40, overlap=8, batch_size=2, multiple=model.pad_multiple)
    tiled_onnx, tiled_torch = tiled_forward(onnx_runner(onnx_path), img, **tiles), tiled_forward(model, img, **tiles)
    assert (tiled_onnx - tiled_torch).abs().max() <= ATOL


def test_refuses_to_overwrite_inputs_and_reports_bad_input_in_one_line(tmp_path, capsys):
    weights = write_weights(tmp_path / 'w.pth', num_levels=2)
    original = weights.read_bytes()
    cases = [
        (['--onnx', str(weights)], f'Refusing to write {weights}: it is the --weights input'),
        (['--onnx', str(tmp_path)], f'--onnx {tmp_path} is a folder'),
    ]
    not_weights = tmp_path / 'notes.txt'
    not_weights.write_text('not a checkpoint')
    cases.append((['--onnx', str(tmp_path / 'x.onnx'), '--weights', str(not_weights)], f'{not_weights}'))
    for args, message in cases:
        argv = ['--weights', str(weights)] + args if '--weights' not in args else args
        assert export.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith('dsmnet-export: error: ') and err.count('\n') == 1 and message in err, err
    assert weights.read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ['notes.txt', 'w.pth']
    with pytest.raises(SystemExit):
        export.main(['--weights', str(weights), '--onnx', str(tmp_path / 'x.onnx'), '--opset', '9'])


def test_writes_atomically_and_keeps_the_old_file_when_the_check_fails(tmp_path, capsys, monkeypatch):
    weights, out = write_weights(tmp_path / 'w.pth', num_levels=2), tmp_path / 'dsmnet.onnx'
    out.write_bytes(b'previous export')
    with monkeypatch.context() as patch:
        patch.setattr(export, 'TOLERANCE', -1.0)  # no difference passes
        assert export.main(['--weights', str(weights), '--onnx', str(out)]) == 2
    assert f'Not writing {out}: onnxruntime\'s output differs' in capsys.readouterr().err
    assert out.read_bytes() == b'previous export' and sorted(os.listdir(tmp_path)) == ['dsmnet.onnx', 'w.pth']

    assert export.main(['--weights', str(weights), '--onnx', str(out), '--opset', str(export.MIN_OPSET)]) == 0
    assert f'Wrote {out}' in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ['dsmnet.onnx', 'w.pth']  # no temporary file left
    assert onnx.load(str(out)).opset_import[0].version == export.MIN_OPSET
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    x = np.random.default_rng(4).random((1, 3, 11, 13), dtype=np.float32)
    with torch.no_grad():
        expected = build_model(str(weights))(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_runner(out)(torch.from_numpy(x)).numpy() - expected).max() <= ATOL
