"""The inference command (dsmnet_arch.infer): images in and out, tiles, precision, refusals (the tiled forward pass
behind it: tests/test_tiling.py; loading the network: tests/test_loading.py)."""
import math
import os
import pickle

import cv2
import numpy as np
import pytest
import torch

import dsmnet_arch.infer as infer
import dsmnet_arch.loading as loading
import dsmnet_arch.precision as precision
from dsmnet_arch.archs.dsmnet_arch import DSMNet
from dsmnet_arch.tiling import activation_bytes_per_pixel

from conftest import REPO, run_entry, small_dsmnet, smooth_image, to_tensor


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A BasicSR-style checkpoint of a small random-weight DSMNet, and the model itself."""
    model = small_dsmnet()
    path = tmp_path_factory.mktemp('weights') / 'net_g_latest.pth'
    torch.save({'params': model.state_dict()}, path)
    return str(path), model


def run(args):
    """Run the command in this process; returns the exit status. In fp32 unless the arguments say otherwise: the
    outputs are compared with fp32 references, and ``--precision auto`` would run bf16 on some CPUs."""
    args = [str(a) for a in args]
    return infer.main(args if '--precision' in args or '--serve' in args else args + ['--precision', 'fp32'])


# ----------------------------------------------------------------------------- images in and out

FORMATS = [
    ('.png', 'gray', np.uint8), ('.png', 'gray', np.uint16), ('.png', 'rgb', np.uint8), ('.png', 'rgb', np.uint16),
    ('.png', 'rgba', np.uint8), ('.png', 'rgba', np.uint16),
    ('.tif', 'gray', np.uint8), ('.tif', 'gray', np.uint16), ('.tif', 'rgb', np.uint8), ('.tif', 'rgb', np.uint16),
    ('.tif', 'rgba', np.uint8), ('.tif', 'rgba', np.uint16),
    ('.bmp', 'gray', np.uint8), ('.bmp', 'rgb', np.uint8), ('.bmp', 'rgba', np.uint8),
    ('.jpg', 'gray', np.uint8), ('.jpg', 'rgb', np.uint8),
    ('.webp', 'rgb', np.uint8), ('.webp', 'rgba', np.uint8),
]


def make_file_image(layout, dtype, height=21, width=30, seed=0):
    """A ``layout`` (gray, rgb, rgba) image of ``dtype`` in OpenCV's channel order."""
    img = smooth_image(height, width, 1 if layout == 'gray' else 3, seed)
    img = (img * np.iinfo(dtype).max).round().astype(dtype)
    if layout == 'gray':
        return img[..., 0]
    if layout == 'rgba':
        alpha = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, (height, width), dtype=dtype)
        img = np.dstack([img, alpha])
    return img


def expected_output(model, file_img):
    """What the command should write: the model on the RGB float image, back in the file's layout."""
    dtype = file_img.dtype
    scale = np.iinfo(dtype).max
    bgr = file_img if file_img.ndim == 3 else np.repeat(file_img[..., None], 3, -1)
    rgb = bgr[..., 2::-1].astype(np.float32) / scale
    with torch.no_grad():
        out = model(to_tensor(rgb))[0].clamp(0, 1).numpy().transpose(1, 2, 0)[..., ::-1]
    if file_img.ndim == 2:
        out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_BGR2GRAY)
    return out * scale


@pytest.mark.parametrize('ext,layout,dtype', FORMATS, ids=[f'{e[1:]}-{lay}-{d.__name__}' for e, lay, d in FORMATS])
def test_formats_round_trip_with_size_depth_and_channels(tmp_path, weights, ext, layout, dtype):
    path, model = weights
    file_img = make_file_image(layout, dtype)
    src = tmp_path / 'in' / f'photo{ext}'
    src.parent.mkdir()
    assert cv2.imwrite(str(src), file_img)
    written = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)  # what the encoder kept (jpg and webp are lossy)

    assert run(['-i', src, '-o', tmp_path / 'out', '--weights', path]) == 0
    out = cv2.imread(str(tmp_path / 'out' / f'photo{ext}'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == dtype and out.shape == written.shape
    if layout == 'rgba':
        np.testing.assert_array_equal(out[..., 3], written[..., 3])  # alpha untouched
    colour = out[..., :3] if layout == 'rgba' else out
    reference = expected_output(model, written[..., :3] if layout == 'rgba' else written)
    error = np.abs(colour.astype(np.float64) - reference) / np.iinfo(dtype).max
    if ext in ('.jpg', '.webp'):  # lossy: compare on average
        assert error.mean() < 0.02
    else:
        assert error.max() <= 1.01 / np.iinfo(dtype).max  # rounding only


def test_output_format_can_change_and_the_limits_are_reported(tmp_path, weights, capsys):
    path, _ = weights
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'deep.png'), make_file_image('rgba', np.uint16))
    assert run(['-i', tmp_path / 'in', '-o', tmp_path / 'out', '--weights', path, '--ext', 'JPG']) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'deep.jpg'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8 and out.shape == (21, 30, 3)
    err = capsys.readouterr().err
    assert '.jpg stores 8 bits per sample' in err and '.jpg has no alpha channel' in err


def test_exif_orientation_is_applied_so_photos_come_out_upright(tmp_path, weights):
    from PIL import Image  # a BasicSR dependency; OpenCV cannot write EXIF

    path, _ = weights
    stored = make_file_image('rgb', np.uint8, 20, 36)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored[..., ::-1]).save(tmp_path / 'phone.jpg', exif=exif.tobytes(), quality=95)
    assert run(['-i', tmp_path / 'phone.jpg', '-o', tmp_path / 'out', '--weights', path, '--compare']) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'phone.jpg'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (36, 20, 3)  # displayed size, no EXIF needed any more
    shown = cv2.imread(str(tmp_path / 'out' / 'compare' / 'phone.jpg'))[:, :20].astype(int)  # the input half
    stored = cv2.imread(str(tmp_path / 'phone.jpg'), cv2.IMREAD_UNCHANGED)
    right, wrong = (np.abs(shown - cv2.rotate(stored, turn)).mean()
                    for turn in (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_90_COUNTERCLOCKWISE))
    assert right < 6 and right < wrong / 4  # jpg re-encoding only


@pytest.mark.parametrize('height,width', [(7, 5), (5, 7), (9, 13)])
@pytest.mark.parametrize('tiling', [['--tile', '0'], ['--tile', 'auto'], ['--tile', '6', '--tile-overlap', '2']],
                         ids=['whole', 'auto', 'tiles'])
def test_odd_tiny_images(tmp_path, weights, height, width, tiling):
    path, model = weights
    file_img = make_file_image('rgb', np.uint8, height, width)
    cv2.imwrite(str(tmp_path / 'tiny.png'), file_img)
    assert run(['-i', tmp_path / 'tiny.png', '-o', tmp_path / 'out', '--weights', path, *tiling]) == 0
    out = cv2.imread(str(tmp_path / 'out' / 'tiny.png'))
    assert out.shape == (height, width, 3)
    error = np.abs(out - expected_output(model, file_img))
    if tiling[1] == '6':  # 5- or 6-pixel tiles: blended, close to the whole image but not equal
        assert error.mean() < 3
    else:
        assert error.max() <= 1.01


@pytest.mark.slow  # the command in a subprocess: 5 s
def test_corrupt_file_is_skipped_by_name_and_the_exit_status_is_1(tmp_path, weights):
    path, _ = weights
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a_good.png'), make_file_image('rgb', np.uint8))
    (folder / 'b_broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not really a jpeg')
    (folder / 'c_empty.png').write_bytes(b'')
    cv2.imwrite(str(folder / 'd_good.bmp'), make_file_image('gray', np.uint8))
    (folder / 'notes.txt').write_text('not an image, not an input')
    proc = run_entry(['-m', 'dsmnet_arch.infer', '-i', folder, '-o', tmp_path / 'out', '--weights', path], cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert f'Skipped {folder / "b_broken.jpg"}: not a readable image' in proc.stderr
    assert f'Skipped {folder / "c_empty.png"}: not a readable image' in proc.stderr
    assert sorted(os.listdir(tmp_path / 'out')) == ['a_good.png', 'd_good.bmp']
    assert 'Derained 2 file(s), 2 failed' in proc.stdout and 's/MP' in proc.stdout


def test_inputs_are_found_in_folders_subfolders_and_globs(tmp_path):
    for rel in ('a.png', 'B.JPG', 'sub/c.tif', 'sub/deeper/d.webp', 'sub/readme.md'):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b'x')

    def names(found):
        return [str(rel) for _, rel in found]

    assert names(infer.find_images(str(tmp_path))) == ['B.JPG', 'a.png']
    assert names(infer.find_images(str(tmp_path), recursive=True)) == [
        'B.JPG', 'a.png', os.path.join('sub', 'c.tif'), os.path.join('sub', 'deeper', 'd.webp')]
    assert names(infer.find_images(str(tmp_path / 'sub' / '**' / '*.*'))) == [
        'c.tif', os.path.join('deeper', 'd.webp')]
    assert names(infer.find_images(str(tmp_path / 'sub' / 'readme.md'))) == ['readme.md']  # named: taken as is
    with pytest.raises(ValueError, match='Input not found: .*missing.png'):
        infer.find_images(str(tmp_path / 'missing.png'))
    with pytest.raises(ValueError, match='No images .* found in .*'):
        infer.find_images(str(tmp_path / 'sub' / '*.md'))


def test_inputs_are_never_overwritten(tmp_path, weights, capsys):
    path, _ = weights
    src = tmp_path / 'photo.png'
    cv2.imwrite(str(src), make_file_image('rgb', np.uint8))
    before = src.read_bytes()
    assert run(['-i', tmp_path, '-o', tmp_path, '--weights', path]) == 2
    assert f'Refusing to write {src}: it would overwrite the input {src}' in capsys.readouterr().err
    assert run(['-i', src, '-o', tmp_path / '.', '--weights', path]) == 2
    assert src.read_bytes() == before
    # two inputs that would land in one output file are refused before anything is written
    cv2.imwrite(str(tmp_path / 'photo.jpg'), make_file_image('rgb', np.uint8))
    assert run(['-i', tmp_path, '-o', tmp_path / 'out', '--weights', path, '--ext', 'png']) == 2
    assert 'would both be written to' in capsys.readouterr().err and not (tmp_path / 'out').exists()


def test_compare_writes_input_and_output_side_by_side(tmp_path, weights):
    path, _ = weights
    file_img = make_file_image('gray', np.uint16)
    cv2.imwrite(str(tmp_path / 'g.png'), file_img)
    assert run(['-i', tmp_path / 'g.png', '-o', tmp_path / 'out', '--weights', path, '--compare']) == 0
    side = cv2.imread(str(tmp_path / 'out' / 'compare' / 'g.png'), cv2.IMREAD_UNCHANGED)
    out = cv2.imread(str(tmp_path / 'out' / 'g.png'), cv2.IMREAD_UNCHANGED)
    assert side.shape == (21, 60) and side.dtype == np.uint16
    np.testing.assert_array_equal(side[:, :30], file_img)
    np.testing.assert_array_equal(side[:, 30:], out)


def test_precision_and_device_choices(tmp_path, weights, capsys):
    path, model = weights
    file_img = make_file_image('rgb', np.uint8)
    cv2.imwrite(str(tmp_path / 'p.png'), file_img)
    args = ['-i', tmp_path / 'p.png', '--weights', path, '--device', 'cpu']
    assert run(args + ['-o', tmp_path / 'fp16', '--precision', 'fp16']) == 2
    assert 'fp16 needs a CUDA GPU; on the CPU use bf16 or fp32' in capsys.readouterr().err
    assert run(args + ['-o', tmp_path / 'bf16', '--precision', 'bf16']) == 0
    out = cv2.imread(str(tmp_path / 'bf16' / 'p.png')).astype(np.float64)
    assert np.abs(out - expected_output(model, file_img)).mean() < 2  # bf16 rounding, not garbage
    if not torch.cuda.is_available():
        assert run(args[:-2] + ['-o', tmp_path / 'gpu', '--device', 'cuda']) == 2
        assert 'no CUDA device is available' in capsys.readouterr().err


def test_auto_tile_splits_an_image_that_does_not_fit(monkeypatch, weights):
    _, model = weights
    derain = infer.Deraining(model, torch.device('cpu'), tile='auto')
    assert derain.tile_for(200, 300) is None  # plenty of memory here
    per_pixel = activation_bytes_per_pixel(model)
    monkeypatch.setattr(infer, 'free_memory', lambda device: 2 * 160 * 160 * per_pixel / infer.MEMORY_SHARE)
    assert derain.tile_for(200, 300) == 224  # 160 * sqrt(2), rounded down to a multiple of 32: 1 x 2 tiles
    img = smooth_image(200, 300)
    with torch.no_grad():
        whole = model(to_tensor(img[..., ::-1].copy()))[0].clamp(0, 1).numpy().transpose(1, 2, 0)[..., ::-1]
    bar = _Bar()
    assert 10 * math.log10(1 / np.mean((derain(img, bar) - whole)**2)) >= 40
    assert bar.total == 2 and bar.done == 2


class _Bar:
    """Records what a tqdm progress bar would show."""

    def reset(self, total):
        self.total, self.done = total, 0

    def update(self, n):
        self.done += n


# ----------------------------------------------------------------------------- weights and arguments

class _Marker:
    """Unpickling this object creates a file: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'params': _Marker(str(marker))}, evil)
    (tmp_path / 'p.png').write_bytes(cv2.imencode('.png', make_file_image('rgb', np.uint8))[1].tobytes())
    assert run(['-i', tmp_path / 'p.png', '-o', tmp_path / 'out', '--weights', evil]) == 2
    err = capsys.readouterr().err
    assert f'Cannot load checkpoint {evil}: not a readable PyTorch checkpoint' in err and len(err.splitlines()) == 1
    assert not marker.exists() and not (tmp_path / 'out').exists()
    with open(evil, 'rb') as f:  # the file is really malicious: a plain unpickler runs the code
        torch.load(f, weights_only=False, pickle_module=pickle)['params'].close()
    assert marker.exists()


def test_a_small_tile_without_an_overlap_gets_the_largest_that_fits(tmp_path, weights, capsys):
    """``--tile 128`` as Real-ESRGAN users type it: the default overlap (64) shrinks to fit, once."""
    path, model = weights  # num_levels 2: tiles shrink by up to 1 pixel to match the padding
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name), make_file_image('rgb', np.uint8, 70, 90))
    assert run(['-i', tmp_path, '-o', tmp_path / 'out', '--weights', path, '--tile', '40']) == 0
    err = capsys.readouterr().err
    assert err.count('--tile 40 leaves room for a tile overlap of 19 pixels, not the default 64: using 19') == 1
    assert sorted(os.listdir(tmp_path / 'out')) == ['a.png', 'b.png']
    assert infer.tile_overlap(128, None, 8) == 60 and infer.tile_overlap(200, None, 8) == 64
    assert infer.tile_overlap('auto', None, 8) == 64 and infer.tile_overlap(None, 5, 8) == 5
    with pytest.raises(ValueError, match=r'--tile 40 must exceed twice --tile-overlap \(19\) by at least 2'):
        infer.tile_overlap(40, 19, 3)  # given, not fitted
    assert run(['-i', tmp_path / 'a.png', '-o', tmp_path / 'out2', '--weights', path, '--tile', '40',
                '--tile-overlap', '20']) == 2
    assert 'error: --tile 40 must exceed twice --tile-overlap (20) by at least 1 for this DSMNet' in \
        capsys.readouterr().err
    assert not (tmp_path / 'out2').exists()


@pytest.mark.parametrize('extra, message', [
    (['--tile-overlap', '-1'], '--tile-overlap must be >= 0, got -1'),
    (['--batch', '0'], '--batch must be >= 1, got 0'),
    (['--tile', 'big'], "argument --tile: expected 'auto', 0 or a tile side in pixels, got 'big'"),
    (['--tile', '-8'], "argument --tile: expected 'auto', 0 or a tile side in pixels, got '-8'"),
    (['--ext', 'gif'], "argument --ext: unsupported output format 'gif'; one of .png, .jpg"),
    (['--device', 'tpu'], "argument --device: invalid choice: 'tpu'"),
    (['--precision', 'fp8'], "argument --precision: invalid choice: 'fp8'"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        run(['-i', tmp_path, '-o', tmp_path / 'out', '--weights', tmp_path / 'w.pth', *extra])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_an_unreadable_options_file_is_named(tmp_path, weights, capsys):
    path, _ = weights
    cv2.imwrite(str(tmp_path / 'p.png'), make_file_image('rgb', np.uint8))
    args = ['-i', tmp_path / 'p.png', '-o', tmp_path / 'out', '--weights', path, '--opt']
    assert run(args + [tmp_path / 'missing.yml']) == 2
    assert f'error: Cannot read options file {tmp_path / "missing.yml"}: ' in capsys.readouterr().err
    (tmp_path / 'broken.yml').write_text('network_g: [unclosed\n')
    assert run(args + [tmp_path / 'broken.yml']) == 2
    err = capsys.readouterr().err
    assert f'error: Cannot read options file {tmp_path / "broken.yml"}: ' in err and len(err.splitlines()) == 1
    (tmp_path / 'none.yml').write_text('name: no network here\n')
    assert run(args + [tmp_path / 'none.yml']) == 2
    assert 'network_g must be a section with "type: DSMNet", got type None' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_max_pixels_skips_larger_images_by_name(tmp_path, weights, capsys):
    path, _ = weights
    cv2.imwrite(str(tmp_path / 'small.png'), make_file_image('rgb', np.uint8, 20, 30))  # 600 pixels
    cv2.imwrite(str(tmp_path / 'large.png'), make_file_image('rgb', np.uint8, 30, 30))  # 900 pixels
    assert run(['-i', tmp_path, '-o', tmp_path / 'out', '--weights', path, '--max-pixels', '800']) == 1
    assert f'Skipped {tmp_path / "large.png"}: 900 pixels, more than the limit of 800 (--max-pixels)' in \
        capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'out')) == ['small.png']


@pytest.mark.parametrize('argv, message', [
    (['--weights', 'w.pth'], '-i/--input and -o/--output are required (or --serve for the web page)'),
    (['--serve', '-i', 'a.png', '--weights', 'w.pth'], '--serve takes no -i/-o'),
    (['-i', 'a.png', '-o', 'out', '--max-pixels', 'many'], "argument --max-pixels: expected a number of pixels"),
])
def test_serve_and_input_arguments_are_checked(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        infer.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_without_weights_the_bundled_ones_run_and_say_so(tmp_path, weights, monkeypatch, capsys):
    path, model = weights
    file_img = make_file_image('rgb', np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), file_img)
    monkeypatch.setattr(loading, 'BUNDLED_WEIGHTS', path)  # the package's file, replaced by a small network's
    assert loading.default_weights() == path
    assert run(['-i', tmp_path / 'a.png', '-o', tmp_path / 'out']) == 0
    assert capsys.readouterr().err.count('no --weights given: using the bundled ones') == 1
    out = cv2.imread(str(tmp_path / 'out' / 'a.png')).astype(np.float64)
    assert np.abs(out - expected_output(model, file_img)).max() <= 1  # the bundled network ran
    monkeypatch.setattr(loading, 'BUNDLED_WEIGHTS', str(tmp_path / 'missing.pth'))
    assert loading.default_weights() is None
    assert run(['-i', tmp_path / 'a.png', '-o', tmp_path / 'out2']) == 2
    assert 'error: --weights is required: this installation has no bundled weights' in capsys.readouterr().err
    assert infer.parse_args(['--serve', '--weights', 'w.pth']).max_pixels == infer.SERVE_MAX_PIXELS


@pytest.mark.parametrize('flags,expected', [({'avx512f', 'avx512_bf16'}, 'bf16'), ({'amx_bf16', 'amx_tile'}, 'bf16'),
                                            ({'avx2', 'avx512f'}, 'fp32'), (set(), 'fp32')])
def test_precision_auto_runs_bf16_only_where_the_cpu_has_native_bfloat16(tmp_path, weights, monkeypatch, flags,
                                                                         expected):
    path, model = weights
    monkeypatch.setattr(precision, 'cpu_flags', lambda: flags)
    chosen = []
    monkeypatch.setattr(infer, 'inference_autocast',
                        lambda device, p: chosen.append(p) or precision.autocast(device, p))
    cv2.imwrite(str(tmp_path / 'a.png'), make_file_image('rgb', np.uint8))
    assert infer.parse_args(['-i', 'a', '-o', 'b']).precision == 'auto'  # the default
    assert run(['-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '--weights', path, '--precision', 'auto',
                '--device', 'cpu']) == 0
    assert chosen == [expected]


def test_max_pixels_is_read_off_the_header_before_decoding(tmp_path):
    """A PNG whose header claims 20000 x 10000 pixels and holds none is refused by its header alone."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    header = struct.pack('>IIBBBBB', 20000, 10000, 8, 2, 0, 0, 0)
    (tmp_path / 'huge.png').write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b''))
    assert infer.image_pixels(tmp_path / 'huge.png') == 200_000_000
    with pytest.raises(ValueError, match=r'^200,000,000 pixels, more than the limit of 50,000,000 \(--max-pixels\)$'):
        infer.read_image(tmp_path / 'huge.png', max_pixels=50_000_000)
    with pytest.raises(ValueError, match='not a readable image'):  # no limit: decoded, and found empty
        infer.read_image(tmp_path / 'huge.png')


@pytest.mark.slow  # graph capture: 3 s
def test_derain_command_compile_flag(tmp_path, monkeypatch):
    """--compile runs the tiles through torch.compile (here with the aot_eager backend) with equal results."""
    compiled = []
    real_compile = torch.compile

    def cheap_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend='aot_eager', **kwargs)

    monkeypatch.setattr(torch, 'compile', cheap_compile)
    torch.manual_seed(0)
    weights = tmp_path / 'net_g.pth'
    torch.save({'params': DSMNet(num_feat=8, num_levels=2, num_subspaces=4).state_dict()}, weights)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / 'rain.png'), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    args = ['-i', tmp_path / 'rain.png', '--weights', weights, '--device', 'cpu', '--tile', '24', '--tile-overlap',
            '4', '--batch', '3']
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'eager']]) == 0 and not compiled
    assert infer.main([str(a) for a in args + ['-o', tmp_path / 'compiled', '--compile']]) == 0
    assert len(compiled) == 1 and isinstance(compiled[0], DSMNet)
    # eager CPU inference runs oneDNN's fused convolutions, the compiled graph plain ones: the same arithmetic
    # rounded differently, so a pixel may land on the other side of an 8-bit step
    compiled_png = cv2.imread(str(tmp_path / 'compiled' / 'rain.png')).astype(int)
    eager_png = cv2.imread(str(tmp_path / 'eager' / 'rain.png')).astype(int)
    assert compiled_png.shape == eager_png.shape and np.abs(compiled_png - eager_png).max() <= 1
