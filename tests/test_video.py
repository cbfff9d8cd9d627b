"""Videos through dsmnet-derain (dsmnet_arch.video): frames, size, frame rate, duration, audio, --compare."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import dsmnet_arch.infer as infer
from dsmnet_arch.archs.dsmnet_arch import DSMNet

av = pytest.importorskip('av', reason='PyAV is not installed (pip install "dsmnet_arch[video]")')

FRAMES, WIDTH, HEIGHT, RATE, SAMPLE_RATE = 12, 64, 48, 24, 16000


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = DSMNet(num_feat=8, num_levels=2, num_subspaces=4).eval()
    path = tmp_path_factory.mktemp('weights') / 'net_g_latest.pth'
    torch.save({'params': model.state_dict()}, path)
    return str(path), model


def rainy_frame(index, width=WIDTH, height=HEIGHT):
    """A moving smooth pattern with bright diagonal streaks, uint8 BGR."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = [0.5 + 0.3 * np.sin(xx / 7 + yy / 9 + c + index / 3) for c in range(3)]
    img = np.stack(planes, -1) + 0.3 * (((xx + 3 * yy + 2 * index).astype(int) % 9) == 0)[..., None]
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_clip(path, audio=True, width=WIDTH, height=HEIGHT, codec='libx264'):
    """FRAMES frames at RATE fps and, with ``audio``, a 440 Hz sine tone in AAC as long as the video."""
    with av.open(str(path), 'w') as out:
        video = out.add_stream(codec, rate=RATE, options={'crf': '10'} if codec == 'libx264' else {})
        video.width, video.height = width, height
        video.pix_fmt = 'yuv444p' if width % 2 or height % 2 else 'yuv420p'
        if audio:
            sound = out.add_stream('aac', rate=SAMPLE_RATE, layout='mono')
        for i in range(FRAMES):
            out.mux(video.encode(av.VideoFrame.from_ndarray(rainy_frame(i, width, height), format='bgr24')))
        out.mux(video.encode(None))
        if audio:
            t = np.arange(FRAMES * SAMPLE_RATE // RATE) / SAMPLE_RATE
            tone = (0.5 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            for first in range(0, len(tone), 1024):
                frame = av.AudioFrame.from_ndarray(tone[None, first:first + 1024], format='fltp', layout='mono')
                frame.sample_rate, frame.pts = SAMPLE_RATE, first
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def probe(path):
    """Frames (BGR uint8), size, average rate, video duration and audio samples and level of a video file."""
    with av.open(str(path)) as clip:
        video = clip.streams.video[0]
        frames = [f.to_ndarray(format='bgr24') for f in clip.decode(video)]
        info = dict(frames=frames, size=(video.width, video.height), rate=video.average_rate,
                    duration=float(video.duration * video.time_base) if video.duration else None,
                    audio=None)
    with av.open(str(path)) as clip:
        if clip.streams.audio:
            stream = clip.streams.audio[0]
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in clip.decode(stream)])
            info['audio'] = dict(codec=stream.codec_context.name, rate=stream.rate, samples=samples)
    return info


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
    return 10 * math.log10(255**2 / mse)


def test_a_clip_is_derained_frame_by_frame_with_its_rate_size_duration_and_audio(tmp_path, weights):
    path, model = weights
    make_clip(tmp_path / 'clip.mp4')
    rainy = probe(tmp_path / 'clip.mp4')
    assert infer.main(['-i', str(tmp_path / 'clip.mp4'), '-o', str(tmp_path / 'out'), '--weights', path,
                       '--compare', '--batch', '3']) == 0
    out, side = probe(tmp_path / 'out' / 'clip.mp4'), probe(tmp_path / 'out' / 'compare' / 'clip.mp4')
    assert len(out['frames']) == len(rainy['frames']) == FRAMES
    assert out['size'] == (WIDTH, HEIGHT) and side['size'] == (2 * WIDTH, HEIGHT)
    assert out['rate'] == side['rate'] == Fraction(RATE)
    assert out['duration'] == pytest.approx(FRAMES / RATE, abs=1e-6)
    # every frame is the network's output for the decoded input frame, up to the encoder's loss
    derain = infer.Deraining(model, torch.device('cpu'), tile=None, multiple=model.pad_multiple)
    for got, before, cmp in zip(out['frames'], rainy['frames'], side['frames']):
        want = (np.clip(derain(before.astype(np.float32) / 255), 0, 1) * 255).round()
        # (4:2:0 chroma costs the streaks ~32 dB; the random network moves the frames ~21 dB away from the input)
        assert psnr(got, want) > 30 and psnr(got, want) > psnr(before, want) + 6
        assert psnr(cmp[:, :WIDTH], before) > 30 and psnr(cmp[:, WIDTH:], want) > 30
    for result in (out, side):  # the tone survives, copied: same codec, rate and samples
        assert result['audio']['codec'] == 'aac' and result['audio']['rate'] == SAMPLE_RATE
        np.testing.assert_array_equal(result['audio']['samples'], rainy['audio']['samples'])


def test_a_clip_without_audio_and_a_corrupt_clip_is_skipped_by_name(tmp_path, weights, capsys):
    path, _ = weights
    make_clip(tmp_path / 'silent.mkv', audio=False, width=WIDTH + 1, height=HEIGHT + 1)  # odd sides: 4:4:4
    (tmp_path / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(range(256)) * 8)
    make_clip(tmp_path / 'cut.mp4')
    data = (tmp_path / 'cut.mp4').read_bytes()
    (tmp_path / 'cut.mp4').write_bytes(data[:len(data) // 2])  # no moov atom: nothing to decode
    status = infer.main(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), '--weights', path])
    err = capsys.readouterr().err
    assert status == 1
    assert f'Skipped {tmp_path / "broken.mp4"}: not a readable video' in err
    assert f'Skipped {tmp_path / "cut.mp4"}: not a readable video' in err
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['silent.mkv']  # nothing left of the others
    silent = probe(tmp_path / 'out' / 'silent.mkv')
    assert len(silent['frames']) == FRAMES and silent['audio'] is None and silent['rate'] == Fraction(RATE)
    assert silent['size'] == (WIDTH + 1, HEIGHT + 1)


def test_ext_applies_to_images_only(tmp_path):
    plan = infer.plan_outputs([(tmp_path / 'a.mp4', infer.Path('a.mp4')), (tmp_path / 'b.jpg', infer.Path('b.jpg'))],
                              tmp_path / 'out', '.png')
    assert [dst.name for _, dst, _ in plan] == ['a.mp4', 'b.png']
