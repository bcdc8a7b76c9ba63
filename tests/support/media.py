"""Generate test media with PyAV from the recordings in ``tests/data``.

The suites need many containers, codecs, channel counts, sample rates and hostile files; committing
them all would bloat the repository and hide how each was made. These helpers build them on demand,
deterministically, as plain functions returning bytes (write them with :func:`write` when a path is
needed). They use PyAV directly, never ``escriba.audio``, so a bug in the code under test cannot
also shape its own inputs.

Samples are float32 arrays shaped ``(channels, samples)`` in [-1, 1].
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Callable
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

JFK = DATA_DIR / "jfk.flac"
STEREO = DATA_DIR / "stereo_diarization.wav"
HOTWORDS = DATA_DIR / "hotwords.mp3"

Samples = npt.NDArray[np.float32]

# Layout names FFmpeg knows for each channel count we generate.
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def layout_for(channels: int) -> str:
    """FFmpeg's usual layout for the count, or an unordered one ("12 channels") beyond 7.1."""
    return _LAYOUTS.get(channels, f"{channels} channels")


# Reading ----------------------------------------------------------------------------------------


def read(path: Path | str | bytes) -> tuple[Samples, int]:
    """Decode a file (or bytes) to float32 ``(channels, n)`` at its own sample rate."""
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    chunks: list[Samples] = []
    with av.open(source, mode="r") as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = stream.codec_context.channels
        # Packed float: PyAV's planar ndarray conversion fails at 8 channels.
        resampler = av.AudioResampler(format="flt", layout=stream.codec_context.layout, rate=rate)
        frames = [out for frame in container.decode(stream) for out in resampler.resample(frame)]
        frames += resampler.resample(None)
        for out in frames:
            chunks.append(out.to_ndarray().reshape(-1, channels).T.astype(np.float32))
    return np.concatenate(chunks, axis=1), rate


@cache
def _speech_cached(name: str) -> tuple[bytes, int, int]:
    samples, rate = read(DATA_DIR / name)
    return samples.tobytes(), samples.shape[0], rate


def speech(name: str = "jfk.flac") -> tuple[Samples, int]:
    """A recording from ``tests/data`` as float32 ``(channels, n)`` (cached; returns a fresh copy)."""
    raw, channels, rate = _speech_cached(name)
    return np.frombuffer(raw, dtype=np.float32).reshape(channels, -1).copy(), rate


#: Wideband read speech (LJ Speech, 22.05 kHz, one speaker, 150 s of different sentences).
WIDEBAND = (
    "speech/audio/joined_ljspeech_LJ001-0009_to_0017.wav",
    "speech/audio/joined_ljspeech_LJ001-0018_to_0027.wav",
)


def _all_speech() -> tuple[str, ...]:
    """The tests/data recordings, then the speech corpus's."""
    names = ["jfk.flac", "stereo_diarization.wav", "hotwords.mp3"]
    names += sorted(f"speech/audio/{p.name}" for p in (DATA_DIR / "speech" / "audio").iterdir())
    return tuple(names)


@cache
def _speech_round(names: tuple[str, ...], rate: int) -> bytes:
    """The recordings ``names``, mono at ``rate``, one after another."""
    pieces: list[Samples] = []
    for name in names:
        samples, source_rate = speech(name)
        mono = samples.mean(axis=0, keepdims=True)
        pieces.append(resample(mono, source_rate, rate)[0])
    return np.concatenate(pieces).astype(np.float32).tobytes()


def _tiled(names: tuple[str, ...], seconds: float, rate: int) -> Samples:
    one_round = np.frombuffer(_speech_round(names, rate), dtype=np.float32)
    repeats = math.ceil(seconds * rate / one_round.size)
    return np.tile(one_round, repeats)[None, : int(seconds * rate)].astype(np.float32)


def long_speech(seconds: float, *, rate: int = 16000) -> Samples:
    """Mono speech about ``seconds`` long: the tests/data recordings, then the speech corpus (about
    470 s of different speakers and sentences before anything repeats; repeated text would read as a
    decoding loop to Whisper's compression-ratio check)."""
    return _tiled(_all_speech(), seconds, rate)


def wideband_speech(seconds: float, *, rate: int = 16000) -> Samples:
    """Mono wideband speech (:data:`WIDEBAND`) about ``seconds`` long, for tests that need many clips
    through the model and check what happens around it: the encoder sees only a short clip's own
    length of context (jfk.flac, narrowband, always gets the full 30 s), so each clip costs a fraction
    of the CPU."""
    return _tiled(WIDEBAND, seconds, rate)


def resample(samples: Samples, rate: int, new_rate: int) -> Samples:
    """Resample ``(channels, n)`` float32 with FFmpeg's resampler."""
    if rate == new_rate:
        return samples
    channels = samples.shape[0]
    resampler = av.AudioResampler(format="flt", layout=layout_for(channels), rate=new_rate)
    frames = resampler.resample(_frame(samples, rate)) + resampler.resample(None)
    out = [f.to_ndarray().reshape(-1, channels).T for f in frames]
    return np.concatenate(out, axis=1).astype(np.float32)


def _frame(samples: Samples, rate: int) -> av.AudioFrame:
    """A packed float frame (PyAV's planar ndarray conversion fails at 8 channels)."""
    channels = samples.shape[0]
    packed = np.ascontiguousarray(samples.T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout_for(channels))
    frame.sample_rate = rate
    return frame


# Synthetic signals ------------------------------------------------------------------------------


def tone(
    frequency_hz: float, seconds: float, *, rate: int = 16000, amplitude: float = 0.5, channels: int = 1
) -> Samples:
    """A sine in every channel."""
    t = np.arange(int(seconds * rate), dtype=np.float64) / rate
    wave = (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def one_sided(samples: Samples, channels: int = 2, channel: int = 0) -> Samples:
    """Put mono ``samples`` in one channel of a multichannel signal, silence in the others."""
    out = np.zeros((channels, samples.shape[-1]), dtype=np.float32)
    out[channel] = samples.reshape(-1)
    return out


def with_gain(samples: Samples, gain_db: float) -> Samples:
    return (samples * np.float32(10 ** (gain_db / 20))).astype(np.float32)


# Encoding ---------------------------------------------------------------------------------------


def encode(
    samples: Samples,
    rate: int,
    *,
    container: str,
    codec: str,
    bit_rate: int | None = None,
    codec_rate: int | None = None,
    options: dict[str, str] | None = None,
    frame_samples: int = 4096,
) -> bytes:
    """Encode ``(channels, n)`` float32 into ``container`` with ``codec`` and return the bytes.

    ``codec_rate`` resamples first when the codec needs another rate (Opus: 48 kHz).
    """
    channels = samples.shape[0]
    layout = layout_for(channels)
    if codec_rate is not None and codec_rate != rate:
        samples = resample(samples, rate, codec_rate)
        rate = codec_rate
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        assert isinstance(stream, AudioStream)
        stream.codec_context.layout = layout
        if bit_rate is not None:
            stream.codec_context.bit_rate = bit_rate
        _write_audio(out, stream, samples, rate, frame_samples)
    return buf.getvalue()


def _write_audio(
    out: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    samples: Samples,
    rate: int,
    frame_samples: int,
) -> None:
    for start in range(0, samples.shape[1], frame_samples):
        frame = _frame(samples[:, start : start + frame_samples], rate)
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def to_wav(samples: Samples, rate: int, *, codec: str = "pcm_s16le") -> bytes:
    return encode(samples, rate, container="wav", codec=codec)


def to_flac(samples: Samples, rate: int) -> bytes:
    return encode(samples, rate, container="flac", codec="flac")


def to_mp3(samples: Samples, rate: int, *, bit_rate: int = 64_000) -> bytes:
    return encode(samples, rate, container="mp3", codec="libmp3lame", bit_rate=bit_rate)


def to_ogg_opus(samples: Samples, rate: int, *, bit_rate: int = 32_000) -> bytes:
    return encode(samples, rate, container="ogg", codec="libopus", bit_rate=bit_rate, codec_rate=48000)


def to_ogg_vorbis(samples: Samples, rate: int) -> bytes:
    # FFmpeg's own Vorbis encoder is flagged experimental (there is no libvorbis in PyAV's wheels).
    return encode(samples, rate, container="ogg", codec="vorbis", options={"strict": "experimental"})


def to_m4a_aac(samples: Samples, rate: int, *, bit_rate: int = 64_000) -> bytes:
    return encode(samples, rate, container="ipod", codec="aac", bit_rate=bit_rate)


def to_adts_aac(samples: Samples, rate: int, *, bit_rate: int = 64_000) -> bytes:
    """Raw AAC in ADTS frames (``.aac``): no container index at all."""
    return encode(samples, rate, container="adts", codec="aac", bit_rate=bit_rate)


def to_webm_opus(samples: Samples, rate: int, *, bit_rate: int = 32_000) -> bytes:
    return encode(samples, rate, container="webm", codec="libopus", bit_rate=bit_rate, codec_rate=48000)


def video(
    samples: Samples | None,
    rate: int = 16000,
    *,
    container: str = "mp4",
    video_codec: str = "mpeg4",
    audio_codec: str = "aac",
    seconds: float | None = None,
    size: int = 64,
    fps: int = 10,
) -> bytes:
    """A small video file with a moving test pattern, with ``samples`` as its audio track or none.

    The video stream comes first, as in most camera and screen recordings, so the decoder has to pick
    the audio stream rather than stream 0.
    """
    if samples is None and seconds is None:
        raise ValueError("a video without audio needs seconds")
    duration = seconds if seconds is not None else samples.shape[1] / rate  # type: ignore[union-attr]
    if samples is not None and audio_codec == "libopus" and rate != 48000:  # Opus runs at 48 kHz only
        samples, rate = resample(samples, rate, 48000), 48000
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        vstream = out.add_stream(video_codec, rate=fps)
        assert isinstance(vstream, VideoStream)
        vstream.width = size
        vstream.height = size
        vstream.pix_fmt = "yuv420p"
        astream: AudioStream | None = None
        if samples is not None:
            added = out.add_stream(audio_codec, rate=rate)
            assert isinstance(added, AudioStream)
            added.codec_context.layout = layout_for(samples.shape[0])
            astream = added
        for i in range(max(1, int(duration * fps))):
            image = np.zeros((size, size, 3), dtype=np.uint8)
            image[:, (i * 4) % size] = 255
            image[(i * 3) % size, :, 1] = 200
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(vstream.encode(frame))
        out.mux(vstream.encode(None))
        if astream is not None and samples is not None:
            _write_audio(out, astream, samples, rate, 4096)
    return buf.getvalue()


def video_without_audio(seconds: float = 2.0) -> bytes:
    return video(None, seconds=seconds)


#: Every format the decoder must read, as ``encoder(samples, rate) -> bytes``.
FORMATS: dict[str, Callable[[Samples, int], bytes]] = {
    "wav": to_wav,
    "flac": to_flac,
    "mp3": to_mp3,
    "ogg-opus": to_ogg_opus,
    "ogg-vorbis": to_ogg_vorbis,
    "m4a-aac": to_m4a_aac,
    "adts-aac": to_adts_aac,
    "webm-opus": to_webm_opus,
    "mp4-video": lambda s, r: video(s, r),
    "mkv-video": lambda s, r: video(s, r, container="matroska", video_codec="libx264", audio_codec="libopus"),
}


def speech_as(fmt: str, name: str = "jfk.flac") -> bytes:
    """A tests/data recording re-encoded as one of :data:`FORMATS` (e.g. ``"m4a-aac"``)."""
    samples, rate = speech(name)
    return FORMATS[fmt](samples, rate)


def speech_at_rate(rate: int, name: str = "jfk.flac") -> bytes:
    """A recording resampled to ``rate`` (4 kHz to 192 kHz), as mono FLAC."""
    samples, source_rate = speech(name)
    return to_flac(resample(samples.mean(axis=0, keepdims=True), source_rate, rate), rate)


def speech_in_one_channel(channels: int = 8, channel: int = 0, name: str = "jfk.flac") -> bytes:
    """A recording in one channel of a multichannel WAV, silence in the others."""
    samples, rate = speech(name)
    return to_wav(one_sided(samples.mean(axis=0), channels, channel), rate)


def long_speech_flac(seconds: float = 300.0) -> bytes:
    """About ``seconds`` of real speech (the recordings repeated) as 16 kHz mono FLAC."""
    return to_flac(long_speech(seconds), 16000)


# Hostile and degenerate inputs ------------------------------------------------------------------


def random_bytes(size: int = 64 * 1024, *, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def truncated(data: bytes, fraction: float) -> bytes:
    """The first ``fraction`` of ``data``: a cut download or upload (cuts mid-frame in general)."""
    return data[: max(0, int(len(data) * fraction))]


def header_only_wav(rate: int = 16000, channels: int = 1) -> bytes:
    """A valid RIFF/WAVE header announcing zero samples: a file of zero duration."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
    return buf.getvalue()


def silence(seconds: float, rate: int = 16000, *, channels: int = 1) -> Samples:
    return np.zeros((channels, int(seconds * rate)), dtype=np.float32)


def decompression_bomb(hours: float = 3.0, *, rate: int = 8000) -> bytes:
    """FLAC of ``hours`` of digital silence: a few hundred kB that decode to hours of samples.

    Every FLAC frame of silence is a constant subframe of a few bytes, so the file is tiny while a
    naive decoder would allocate hours of audio. Frames are encoded from one reused zero buffer.
    """
    block = 16384
    total = int(hours * 3600 * rate)
    zeros = np.zeros((1, block), dtype=np.int16)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        stream = out.add_stream(
            "flac", rate=rate, options={"compression_level": "0", "frame_size": str(block)}
        )
        stream.codec_context.layout = "mono"
        stream.codec_context.format = "s16"
        for start in range(0, total, block):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating parent directories) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
