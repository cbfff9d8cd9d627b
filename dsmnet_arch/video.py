"""Derain every frame of a video: ``dsmnet-derain -i clip.mp4 -o OUTDIR`` (see docs/inference.md).

Frames go through the same :class:`dsmnet_arch.infer.Deraining` as photos (tiling, batching,
precision), ``batch_size`` frames (or their tiles) per forward pass. The output has the input's
name and container, the same size, frame rate and timestamps (so the same duration), the video
re-encoded (H.264 in mp4, mov, m4v and mkv; VP9 in webm; MPEG-4 part 2 in avi) and the first audio
track copied as it is, packet by packet.

Video goes through PyAV (``pip install "dsmnet_arch[video]"``), whose wheels ship FFmpeg's
libraries: frames are decoded into arrays and encoded from them in this process, with the
input's timestamps, and audio packets are copied into the output without re-encoding, in one
pass. (imageio-ffmpeg pipes raw frames to and from an ``ffmpeg`` program: timestamps and the
audio track would take a second ``ffmpeg`` run to mux.)
"""
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

#: File name endings taken as videos, lower case.
VIDEO_EXTENSIONS = ('.mp4', '.mov', '.m4v', '.mkv', '.webm', '.avi')
#: Encoders by output extension, the first one FFmpeg has is used.
ENCODERS = {'.webm': ('libvpx-vp9', 'libvpx'), '.avi': ('mpeg4', )}
DEFAULT_ENCODERS = ('libx264', 'h264', 'mpeg4')
#: Encoder options: visually lossless where the encoder has a quality setting.
ENCODER_OPTIONS = {'libx264': {'crf': '16', 'preset': 'medium'}, 'libvpx-vp9': {'crf': '20', 'b': '0'},
                   'libvpx': {'crf': '8', 'b': '4M'}, 'mpeg4': {'qscale': '2'}}


def import_av():
    """PyAV, or a one-line ``ValueError`` saying how to install it."""
    try:
        import av
    except ImportError:
        raise ValueError('videos need PyAV: pip install "dsmnet_arch[video]"') from None
    return av


def _reason(err):
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text


class _Writer:
    """One output video: the derained frames (width ``width``) and a copy of the audio track."""

    def __init__(self, av, path, video_in, audio_in, width, height):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), 'w')
        ext = path.suffix.lower()
        names = [n for n in ENCODERS.get(ext, DEFAULT_ENCODERS) if n in av.codecs_available]
        if not names:
            raise ValueError(f'this FFmpeg has no encoder for {ext} ({", ".join(ENCODERS.get(ext, DEFAULT_ENCODERS))})')
        rate = video_in.average_rate or video_in.guessed_rate
        self.stream = self.container.add_stream(names[0], rate=rate, options=ENCODER_OPTIONS.get(names[0], {}))
        self.stream.width, self.stream.height = width, height
        # 4:2:0 needs even sides; odd ones keep full chroma where the encoder can (H.264, VP9)
        odd = width % 2 or height % 2
        self.stream.pix_fmt = 'yuv444p' if odd and names[0] in ('libx264', 'libvpx-vp9') else 'yuv420p'
        self.stream.time_base = video_in.time_base  # the input's timestamps, unchanged
        self.audio = None
        self.notes = []
        if audio_in is not None:
            try:
                self.audio = self.container.add_stream_from_template(audio_in)
            except (ValueError, av.FFmpegError) as err:
                self.notes.append(f'audio not copied ({audio_in.codec_context.name} in {ext}): {_reason(err)}')

    def frame(self, av, bgr, pts, time_base):
        frame = av.VideoFrame.from_ndarray(bgr, format='bgr24')
        frame.pts, frame.time_base = pts, time_base
        self.container.mux(self.stream.encode(frame))

    def audio_packet(self, packet):
        if self.audio is not None:
            packet.stream = self.audio
            self.container.mux(packet)

    def close(self):
        self.container.mux(self.stream.encode(None))
        self.container.close()


def derain_video(derain, src, dst, cmp=None, frame_bar=None):
    """Derain every frame of the video ``src`` into ``dst`` (and input | output side by side into ``cmp``).

    ``derain`` is a :class:`dsmnet_arch.infer.Deraining`; ``frame_bar`` a tqdm-like bar (one is made
    when ``None``), reset to the number of frames. Returns a :class:`dsmnet_arch.infer.Derained`
    (pixels of all frames; a note with the frame count and rate). Raises ``ValueError`` naming what is
    wrong (no PyAV, not a readable video, a frame that cannot be decoded); nothing is left at ``dst``
    or ``cmp`` then.
    """
    av = import_av()
    from dsmnet_arch.infer import Derained
    try:
        container = av.open(str(src))
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise ValueError(f'not a readable video ({_reason(err)})') from None
    writers, own_bar = [], frame_bar is None
    start = time.perf_counter()
    try:
        with container:
            video_in, audio_in, width, height = _input_streams(container)
            writers.append(_Writer(av, Path(dst), video_in, audio_in, width, height))
            if cmp is not None:
                writers.append(_Writer(av, Path(cmp), video_in, audio_in, 2 * width, height))
            if own_bar:
                frame_bar = tqdm(desc='frames', unit='frame', leave=False, disable=None)
            frame_bar.reset(total=video_in.frames or None)
            count = _derain_frames(av, derain, container, (video_in, audio_in), writers, frame_bar)
            for writer in writers:
                writer.close()
    except BaseException as err:
        for writer in writers:
            try:
                writer.container.close()
            except Exception:
                pass
            writer.path.unlink(missing_ok=True)
        if isinstance(err, av.FFmpegError):
            if getattr(err, 'filename', None) in {str(w.path) for w in writers}:
                raise ValueError(f'cannot write {err.filename} ({_reason(err)})') from None
            raise ValueError(f'not a readable video ({_reason(err)})') from None
        raise
    finally:
        if own_bar and frame_bar is not None:
            frame_bar.close()
    seconds = time.perf_counter() - start
    rate = f'{count} frames of {width}x{height} in {seconds:.1f} s ({count / seconds:.2f} frames/s)'
    notes = writers[0].notes + [rate]
    return Derained(count * width * height, notes, None, None)


def _input_streams(container):
    """``(video stream, first audio stream or None, width, height)`` of an opened input; ``ValueError``
    without a video stream or a frame size."""
    if not container.streams.video:
        raise ValueError('no video stream in the file')
    video_in = container.streams.video[0]
    video_in.thread_type = 'AUTO'
    audio_in = container.streams.audio[0] if container.streams.audio else None
    width, height = video_in.codec_context.width, video_in.codec_context.height
    if not width or not height:
        raise ValueError('not a readable video (no frame size in its header)')
    return video_in, audio_in, width, height


def _derain_frames(av, derain, container, streams, writers, frame_bar):
    """Decode the video stream of ``streams`` (video, audio or None), derain its frames ``derain.batch_size``
    at a time and encode them into ``writers`` (the output, then the side-by-side one if any), copying the
    audio packets; returns the number of frames (a ``ValueError`` if none could be decoded)."""
    video_in, audio_in = streams
    pending, count = [], 0

    def flush():
        outputs = derain.run([bgr.astype(np.float32) / 255 for bgr, _ in pending])
        for (bgr, pts), out in zip(pending, outputs):
            out = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
            writers[0].frame(av, out, pts, video_in.time_base)
            if len(writers) > 1:
                writers[1].frame(av, np.concatenate([bgr, out], axis=1), pts, video_in.time_base)
        frame_bar.update(len(pending))
        pending.clear()

    for packet in container.demux([s for s in streams if s is not None]):
        if packet.stream is audio_in:
            if packet.dts is not None:  # the demuxer's final empty packet has none
                for writer in writers:
                    writer.audio_packet(packet)
            continue
        for frame in packet.decode():
            pts = frame.pts if frame.pts is not None else count  # streams without timestamps
            pending.append((frame.to_ndarray(format='bgr24'), pts))
            count += 1
            if len(pending) == derain.batch_size:
                flush()
    if pending:
        flush()
    if count == 0:
        raise ValueError('not a readable video (no frame could be decoded)')
    return count
