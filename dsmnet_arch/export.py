"""Export trained DSM-Net weights to ONNX: ``python -m dsmnet_arch.export --weights W.pth --onnx out.onnx``.

The network's arguments are found as ``dsmnet-derain`` finds them (:func:`dsmnet_arch.loading.build_model`):
``--opt``, else the arguments the checkpoint records, else the weights' keys and shapes. The graph
takes a float32 RGB batch in [0, 1] (``input``: N x 3 x H x W) of any batch size, height and width
(from 2^(L-2) + 1 pixels, L = num_levels) and returns the derained batch (``output``, same shape):
DSMNet's reflect padding to a multiple of 2^(L-1) and the crop back are part of the graph. Before
anything is written, onnxruntime runs the graph on an image of odd size and its output is compared
with PyTorch's. The file is written to a temporary file beside the output, then renamed over it.
See docs/export.md (also for tiling large images with the exported graph).
"""
import argparse
import io
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

from dsmnet_arch import __version__
from dsmnet_arch.loading import build_model
from dsmnet_arch.utils import atomic_write

#: ONNX opset of the export; 13 is the first with all the operators DSMNet needs (Unflatten, in the
#: subspace attention), 20 the last the TorchScript-based exporter writes.
DEFAULT_OPSET, MIN_OPSET, MAX_OPSET = 17, 13, 20
#: Largest absolute difference between onnxruntime's and PyTorch's output that passes the check
#: (images in [0, 1]; measured differences are about 1e-7).
TOLERANCE = 1e-4


def _onnx_modules():
    """``(onnx, onnxruntime)``, or a one-line ``ValueError`` that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise ValueError(f'the export needs the packages onnx and onnxruntime ({err}); install them with '
                         "pip install 'dsmnet_arch[export]' or pip install -r requirements.txt") from None
    return onnx, onnxruntime


def to_onnx(model, opset=DEFAULT_OPSET):
    """The ONNX model (``onnx.ModelProto``) of an eval-mode DSMNet, with dynamic batch, height and width.

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``), traced on an odd-sized image so that
    the padding is traced as computed from the input's size.
    """
    onnx, _ = _onnx_modules()
    multiple = model.pad_multiple
    sample = torch.rand(1, model.conv_first.in_channels, 4 * multiple + 1, 6 * multiple + 3,
                        generator=torch.Generator().manual_seed(0))
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about the Python checks in DSMNet.forward (minimum size, channel counts), which hold
        # for every valid input, and PyTorch 2.9+ that this exporter is deprecated (see docs/export.md)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX export', DeprecationWarning)
        warnings.filterwarnings('ignore', category=DeprecationWarning, module=r'torch\.onnx\.')
        torch.onnx.export(model, (sample, ), buffer, dynamo=False, opset_version=opset, input_names=['input'],
                          output_names=['output'], dynamic_axes={'input': axes, 'output': axes})
    return onnx.load_from_string(buffer.getvalue())


def describe(proto, model, weights):
    """Add what a deployment needs to know to ``proto``'s metadata (``metadata_props``) and doc string."""
    multiple, channels = model.pad_multiple, model.conv_first.in_channels
    metadata = {
        'dsmnet_pad_multiple': str(multiple),
        'dsmnet_min_side': str(multiple // 2 + 1),
        'dsmnet_num_levels': str(model.num_levels),
        'source_weights': os.path.basename(weights),
        'exported_by': f'dsmnet_arch {__version__}, torch {torch.__version__}',
        'io': json.dumps({
            'input': f'float32 N x {channels} x H x W, {"RGB" if channels == 3 else "channels"} in [0, 1]',
            'output': f'float32 N x {channels} x H x W, the derained images (not clamped)'
        }),
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    side = multiple // 2 + 1
    proto.doc_string = (f'DSM-Net deraining (Li et al., CVPRW 2022) from {os.path.basename(weights)}: images of any '
                        f'size from {side} x {side}, padded inside to a multiple of {multiple}')
    return proto


def check(onnx_bytes, model):
    """Run ``onnx_bytes`` with onnxruntime (CPU) and ``model`` with PyTorch on one random image whose
    odd sides DSMNet pads; returns ``(max_abs_diff, (height, width))``."""
    _, onnxruntime = _onnx_modules()
    multiple = model.pad_multiple
    height, width = 5 * multiple + 1, 7 * multiple + 3
    x = torch.rand(1, model.conv_first.in_channels, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    session = onnxruntime.InferenceSession(onnx_bytes, providers=['CPUExecutionProvider'])
    got = session.run(None, {'input': x.numpy()})[0]
    return float(np.abs(got - expected).max()), (height, width)


def _same_file(a, b):
    both = os.path.exists(a) and os.path.exists(b)
    return os.path.abspath(a) == os.path.abspath(b) or (both and os.path.samefile(a, b))


def check_paths(weights, onnx_path, opt=None):
    """Refuse an output that is a folder or one of the inputs (the weights, the options file)."""
    if os.path.isdir(onnx_path):
        raise ValueError(f'--onnx {onnx_path} is a folder; give the file to write, e.g. {onnx_path}/dsmnet.onnx')
    for name, path in (('--weights', weights), ('--opt', opt)):
        if path is not None and _same_file(path, onnx_path):
            raise ValueError(f'Refusing to write {onnx_path}: it is the {name} input; choose another output file')


def export(weights, onnx_path, opt=None, opset=DEFAULT_OPSET, verify=True):
    """Build DSMNet from ``weights`` (and ``opt``), export it to ``onnx_path``; returns the lines to print.

    Raises a one-line ``ValueError`` (or ``FileNotFoundError``) naming the file for bad inputs, a failed
    export or a failed check; nothing is written then.
    """
    check_paths(weights, onnx_path, opt)
    start = time.perf_counter()
    model = build_model(weights, opt)
    onnx, _ = _onnx_modules()
    try:
        proto = describe(to_onnx(model, opset), model, weights)
        onnx.checker.check_model(proto)
    except (RuntimeError, TypeError, torch.onnx.errors.OnnxExporterError, onnx.checker.ValidationError) as err:
        raise ValueError(f'Cannot export {weights} to ONNX opset {opset}: {str(err).strip().splitlines()[0]}') from None
    data = proto.SerializeToString()
    lines = [f'Exported {weights} (DSMNet, num_levels {model.num_levels}) to ONNX opset {opset} in '
             f'{time.perf_counter() - start:.1f} s']
    if verify:
        diff, (height, width) = check(data, model)
        if not diff <= TOLERANCE:
            raise ValueError(f'Not writing {onnx_path}: onnxruntime\'s output differs from PyTorch\'s by {diff:.3g} '
                             f'(> {TOLERANCE:g}) on a {height} x {width} image')
        lines.append(f'Checked with onnxruntime on a {height} x {width} image: max |ONNX - PyTorch| = {diff:.2g}')
    os.makedirs(os.path.dirname(os.path.abspath(onnx_path)), exist_ok=True)
    atomic_write(onnx_path, lambda f: f.write(data))
    lines.append(f'Wrote {onnx_path} ({len(data) / 2**20:.1f} MiB): input "input", output "output", float32 '
                 f'N x {model.conv_first.in_channels} x H x W in [0, 1], any N, H, W >= {model.pad_multiple // 2 + 1}')
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='dsmnet-export', description='Export DSM-Net weights to ONNX.')
    parser.add_argument('--weights', required=True,
                        help="BasicSR net_g_*.pth ('params_ema' preferred over 'params') or a bare state dict")
    parser.add_argument('--onnx', required=True, help='the ONNX file to write (never one of the inputs)')
    parser.add_argument('--opt', help='training options file whose network_g gives the DSMNet arguments '
                        '(default: those the checkpoint records, else read off the weights)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})')
    parser.add_argument('--no-check', dest='verify', action='store_false',
                        help='skip running the graph with onnxruntime against PyTorch before writing it')
    args = parser.parse_args(argv)
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        parser.error(f'--opset must be {MIN_OPSET} to {MAX_OPSET}, got {args.opset}')
    return args


def main(argv=None):
    """Command line entry point; returns the exit status (0 written, 2 nothing written)."""
    args = parse_args(argv)
    try:
        lines = export(args.weights, args.onnx, args.opt, args.opset, args.verify)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f'dsmnet-export: error: {err}', file=sys.stderr)
        return 2
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
