"""Decode any container and codec FFmpeg knows into 16 kHz mono float32, with PyAV.

PyAV ships FFmpeg's libraries in its wheel, so no system ffmpeg is needed and the decoder is the
same on every machine. The decode is streamed packet by packet and stops as soon as the decoded
audio passes the duration limit: a decompression bomb (a few hundred kB of FLAC or Opus that
decodes to days of silence) is refused after decoding just over the limit, never held in memory.
:func:`decode_stream` hands the samples on in one-second chunks and keeps none of them, so a caller
that measures, encodes or spools as they come holds the same few megabytes for ten minutes of audio
as for four hours; :func:`decode_audio` collects them for callers that want the whole array.

Channels are averaged after resampling (a plain mean, the same weight for every channel), rather
than left to FFmpeg's downmix matrix, which for float output sums stereo at -3 dB each (louder than
either channel) and cannot mix layouts whose channel order is unspecified.

Damaged input policy, chosen to match what a media player does:

* the container header cannot be read: :class:`CorruptAudioError` when the first bytes carry a known
  media signature (a truncated or damaged file), :class:`NotAudioError` otherwise;
* some packets fail to decode (a damaged region, a file cut mid-frame): they are skipped and the
  rest is kept, with a warning; if more packets fail than decode, the file is corrupt;
* the file is cut short (an interrupted upload): what is there is decoded and kept, with a warning
  when the container declared a longer duration; nothing decodable at all is corrupt.
"""

from __future__ import annotations

import errno
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.error
import numpy as np
import numpy.typing as npt

from escriba.audio.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyInputError,
    NoAudioStreamError,
    NotAudioError,
    UnsupportedCodecError,
    UnsupportedFormatError,
    ZeroDurationError,
)
from escriba.audio.pcm import SAMPLE_RATE_HZ

# First bytes of the media files people upload. A header that FFmpeg cannot parse behind one of
# these means a damaged file rather than a document or random data.
_MAGIC_PREFIXES = (
    b"RIFF",  # WAV, AVI
    b"RF64",  # WAV over 4 GiB
    b"BW64",
    b"FORM",  # AIFF
    b"fLaC",
    b"OggS",
    b"ID3",  # MP3 with a tag
    b"\x1aE\xdf\xa3",  # Matroska, WebM
    b"0&\xb2u\x8ef\xcf\x11",  # ASF, WMA, WMV
    b"#!AMR",
    b"caff",
    b"wvpk",
    b"MAC ",  # Monkey's Audio
    b".snd",  # Sun AU
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG program stream
)
_ISO_BOX_TYPES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")  # MP4, M4A, MOV, 3GP
_IMAGE_FORMATS = frozenset({"image2", "gif", "apng", "webp", "ico"})
_HEAD_BYTES = 16
_FILE_SYSTEM_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What the upload was, as FFmpeg saw it."""

    container: str  # demuxer name, e.g. "mp3", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # codec name, e.g. "mp3", "aac", "opus"
    sample_rate_hz: int
    channels: int
    size_bytes: int
    declared_duration_s: float | None  # from the container header, when it states one


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]  # mono, in [-1, 1] for well-formed input
    sample_rate_hz: int
    source: SourceInfo
    skipped_packets: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate_hz


@dataclass(frozen=True, slots=True)
class DecodeSummary:
    """A streamed decode once it is over: everything :class:`DecodedAudio` says but the samples."""

    sample_count: int  # per channel
    sample_rate_hz: int
    source: SourceInfo
    skipped_packets: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.sample_count / self.sample_rate_hz


#: Receives each decoded chunk: ``(n,)`` float32 for mono output, ``(n, channels)`` for separate ones.
#: The array is the caller's to keep or drop; the decoder never touches it again.
Sink = Callable[[npt.NDArray[np.float32]], None]


def looks_like_media(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) carries a known audio/video signature."""
    if head.startswith(_MAGIC_PREFIXES) or head[4:8] in _ISO_BOX_TYPES:
        return True
    if len(head) < 2 or head[0] != 0xFF:
        return False
    mpeg_audio = (head[1] & 0xE0) == 0xE0 and (head[1] & 0x06) != 0  # 11-bit sync, layer I-III
    adts = (head[1] & 0xF6) == 0xF0  # 12-bit sync, layer 00: AAC in ADTS frames
    return mpeg_audio or adts


def decode_audio(
    source: bytes | Path,
    *,
    max_duration_s: float,
    threads: int = 0,
    filename: str = "",
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    channel: int | None = None,
) -> DecodedAudio:
    """Decode the first audio stream of ``source`` to mono float32 at ``sample_rate_hz``: the mean of
    its channels, or only channel ``channel`` (0-based) of it.

    ``threads`` is the decoder thread count (0 lets FFmpeg choose). ``filename`` only names the file
    in messages: the format is always probed from the content, never trusted from an extension (a
    raw-PCM demuxer picked by name would "decode" any bytes into noise).
    """
    buffer = _Buffer(SAMPLE_RATE_HZ * 60)
    summary = decode_stream(
        source,
        buffer.extend,
        max_duration_s=max_duration_s,
        threads=threads,
        filename=filename,
        sample_rate_hz=sample_rate_hz,
        channel=channel,
    )
    return DecodedAudio(
        samples=buffer.array(),
        sample_rate_hz=summary.sample_rate_hz,
        source=summary.source,
        skipped_packets=summary.skipped_packets,
        warnings=summary.warnings,
    )


def decode_stream(
    source: bytes | Path,
    sink: Sink,
    *,
    max_duration_s: float,
    threads: int = 0,
    filename: str = "",
    sample_rate_hz: int = SAMPLE_RATE_HZ,
    channel: int | None = None,
    channels: int | None = None,
) -> DecodeSummary:
    """Decode like :func:`decode_audio`, handing the samples to ``sink`` chunk by chunk.

    ``channels`` keeps the first ``channels`` channels apart instead of mixing them (a source with
    fewer repeats its last one, as ``channel`` does): one decode for every channel of a recording.
    A failure (too long, corrupt) raises after the sink has seen what was decoded before it.
    """
    if channel is not None and channels is not None:
        raise ValueError("channel and channels are exclusive")
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    label = repr(filename) if filename else (repr(source.name) if isinstance(source, Path) else "the upload")
    if size == 0:
        raise EmptyInputError(f"{label} is empty (0 bytes): upload an audio or video file")
    with _open(source, label) as container:
        stream = _audio_stream(container, label)
        ctx = stream.codec_context
        if ctx is None:
            raise UnsupportedCodecError(f"{label}: no decoder for the codec of its audio track")
        ctx.thread_count = threads
        decoder = _Decoder(container, stream, label, size, sample_rate_hz, max_duration_s, sink)
        decoder.channel, decoder.channels = channel, channels
        return decoder.run()


def _head(source: bytes | Path) -> bytes:
    if isinstance(source, bytes):
        return source[:_HEAD_BYTES]
    with source.open("rb") as fh:
        return fh.read(_HEAD_BYTES)


def _media_input(source: bytes | Path) -> io.BytesIO | str:
    return io.BytesIO(source) if isinstance(source, bytes) else str(source)


#: The demuxers FFmpeg may choose from: audio and video containers only. Playlists, concat lists,
#: session descriptions and streaming manifests (concat, hls, dash, sdp, rtsp, image2 patterns...)
#: would make the demuxer open other files or URLs named inside the upload, so they are never probed.
ACCEPTED_DEMUXERS = (
    "wav,w64,flac,mp3,ogg,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,aac,asf,aiff,amr,amrnb,amrwb,caf,au,"
    "wv,ape,tta,voc,ac3,eac3,dts,truehd,mlp,mpeg,mpegts,avi,flv,mp2,opus,oga,spx,rm,nut,mxf,gsm,"
    "xwma,sox,iff,aea,dsf,mpc,mpc8,shn,tak,wsaud,loas,latm,mpegps,vob,smjpeg,swf,rso,ircam,sln"
)


def _open_options(source: bytes | Path) -> dict[str, str]:
    """Only what was handed over: bytes in memory need no protocol at all, a path the file protocol
    for that one file (the demuxer allow-list keeps lists that name other files out)."""
    protocols = "file" if isinstance(source, Path) else "none"
    return {"format_whitelist": ACCEPTED_DEMUXERS, "protocol_whitelist": protocols}


def _open(source: bytes | Path, label: str) -> av.container.InputContainer:
    try:
        return av.open(
            _media_input(source), mode="r", metadata_errors="replace", options=_open_options(source)
        )
    except av.error.FFmpegError as exc:
        # The file system, not the content (a missing or unreadable path). FFmpeg also reports damaged
        # content as an I/O error (EIO from a demuxer reading bytes in memory): that is the file's fault.
        if isinstance(exc, OSError) and isinstance(source, Path) and exc.errno in _FILE_SYSTEM_ERRNOS:
            raise
        detail = exc.strerror or type(exc).__name__
        if looks_like_media(_head(source)):
            raise CorruptAudioError(
                f"{label} looks like a media file but its header cannot be read ({detail}): "
                "the file is truncated or damaged"
            ) from exc
        raise NotAudioError(
            f"{label} is not an audio or video file that can be decoded ({detail}); "
            "send e.g. WAV, FLAC, MP3, M4A/AAC, Ogg (Vorbis/Opus), WebM or a video with sound"
        ) from exc


def _audio_stream(container: av.container.InputContainer, label: str) -> av.audio.stream.AudioStream:
    if container.streams.audio:
        return container.streams.audio[0]
    fmt = container.format.name
    found = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
    if fmt.endswith("_pipe") or fmt in _IMAGE_FORMATS:
        raise NotAudioError(f"{label} is an image ({fmt}), not audio")
    if not container.streams.video:
        raise NotAudioError(f"{label} ({fmt}) holds no audio or video, only: {found}")
    raise NoAudioStreamError(f"{label} ({fmt}) has no audio track (found: {found}); nothing to transcribe")


class _Decoder:
    """One streamed decode: packets to frames to 16 kHz mono samples, with the limit enforced."""

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.audio.stream.AudioStream,
        label: str,
        size: int,
        rate: int,
        max_duration_s: float,
        sink: Sink,
    ) -> None:
        self.channel: int | None = None
        self.channels: int | None = None
        self.sink = sink
        self.count = 0
        self.container = container
        self.stream = stream
        self.label = label
        self.size = size
        self.rate = rate
        self.max_duration_s = max_duration_s
        self.limit = int(max_duration_s * rate)
        self.declared_s = _declared_duration(container, stream)
        self.resampler: av.AudioResampler | None = None
        self.resampler_key: tuple[str, str, int] | None = None
        self.source_rate = 0
        self.source_channels = 0
        self.good = 0
        self.bad = 0
        self.first_error: Exception | None = None
        self.read_error: Exception | None = None

    def run(self) -> DecodeSummary:
        for frame in self._frames():
            self._add(frame)
        self._flush_resampler()
        return self._result()

    def _frames(self) -> Iterator[av.AudioFrame]:
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:  # the container breaks off: keep what was read
                self.read_error = exc
                break
            try:
                frames = self.stream.decode(packet)
            except av.error.FFmpegError as exc:
                self.bad += 1
                self.first_error = self.first_error or exc
                continue
            if packet.size:
                self.good += 1
            yield from frames
        try:  # drain the decoder after a read error (demux's own end-of-stream packet does it otherwise)
            yield from self.stream.decode(None)
        except av.error.FFmpegError as exc:
            self.first_error = self.first_error or exc

    def _add(self, frame: av.AudioFrame) -> None:
        if frame.samples == 0:
            return
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        resampler = self.resampler
        if resampler is None or key != self.resampler_key:
            # The first frame, or the stream changed rate or layout mid-way (chained Ogg, some
            # broadcast AAC): finish the old conversion and start a matching one. Output comes in
            # one-second frames so the per-frame numpy work below runs once a second, not per packet.
            self._flush_resampler()
            resampler = av.AudioResampler(
                format="flt", layout=frame.layout, rate=self.rate, frame_size=self.rate
            )
            self.resampler, self.resampler_key = resampler, key
            if not self.source_rate:
                self.source_rate = frame.sample_rate
                self.source_channels = frame.layout.nb_channels
        self._append(self._convert(resampler, frame))

    def _flush_resampler(self) -> None:
        if self.resampler is not None:
            self._append(self._convert(self.resampler, None))
            self.resampler = None
            self.resampler_key = None

    def _convert(self, resampler: av.AudioResampler, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        # The header decides the rate and layout, so a hostile one (a WAV claiming 2^31 Hz) reaches
        # FFmpeg's resampler, which then fails to allocate: that is the file's fault, not a crash.
        try:
            return resampler.resample(frame)
        except av.error.FFmpegError as exc:
            _, layout, rate = self.resampler_key or ("", "unknown layout", 0)
            raise UnsupportedFormatError(
                f"{self.label}: its audio ({rate} Hz, {layout}) cannot be converted to {self.rate} Hz "
                f"mono ({_describe(exc)}); re-encode it at a common sample rate"
            ) from exc

    def _append(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            channels = frame.layout.nb_channels
            # Packed float: one row of interleaved samples (PyAV's planar conversion breaks at 8 channels).
            interleaved = np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1, channels)
            if self.channels is not None:
                kept = [min(index, channels - 1) for index in range(self.channels)]
                chunk = np.ascontiguousarray(interleaved[:, kept])
            elif channels == 1:
                chunk = interleaved[:, 0]
            elif self.channel is not None:
                chunk = interleaved[:, min(self.channel, channels - 1)].copy()
            else:  # the mean of the channels, as one matrix-vector product
                chunk = interleaved @ np.full(channels, 1.0 / channels, dtype=np.float32)
            self.sink(chunk)
            self.count += chunk.shape[0]
            if self.count > self.limit:
                self._too_long()

    def _too_long(self) -> None:
        decoded_s = self.count / self.rate
        declared = f"; the file declares {_clock(self.declared_s)}" if self.declared_s else ""
        raise AudioTooLongError(
            f"{self.label} is longer than the limit of {_clock(self.max_duration_s)} "
            f"({self.max_duration_s:g} s): decoding stopped at {decoded_s:.1f} s{declared}. "
            "Split the recording or trim it",
            limit_s=self.max_duration_s,
            decoded_s=decoded_s,
        )

    def _result(self) -> DecodeSummary:
        if self.count == 0:
            self._nothing_decoded()
        if self.bad > self.good:
            raise CorruptAudioError(
                f"{self.label}: {self.bad} of {self.bad + self.good} audio packets cannot be decoded "
                f"({_describe(self.first_error)}); the file is damaged"
            ) from self.first_error
        return DecodeSummary(
            sample_count=self.count,
            sample_rate_hz=self.rate,
            source=self._source_info(),
            skipped_packets=self.bad,
            warnings=self._warnings(self.count / self.rate),
        )

    def _nothing_decoded(self) -> None:
        cause = self.first_error or self.read_error
        if cause is not None or (self.declared_s or 0) > 0:
            what = _describe(cause) if cause else f"it declares {self.declared_s:.1f} s"
            raise CorruptAudioError(
                f"{self.label}: no audio could be decoded ({what}); the file is truncated or damaged"
            ) from cause
        raise ZeroDurationError(f"{self.label} holds no audio samples (duration 0 s)")

    def _source_info(self) -> SourceInfo:
        ctx = self.stream.codec_context
        return SourceInfo(
            container=self.container.format.name,
            codec=ctx.codec.canonical_name,
            sample_rate_hz=self.source_rate or ctx.sample_rate,
            channels=self.source_channels or ctx.channels,
            size_bytes=self.size,
            declared_duration_s=self.declared_s,
        )

    def _warnings(self, decoded_s: float) -> tuple[str, ...]:
        notes: list[str] = []
        if self.bad:
            notes.append(f"skipped {self.bad} undecodable packet(s): {_describe(self.first_error)}")
        if self.read_error is not None:
            notes.append(f"reading stopped early: {_describe(self.read_error)}")
        if self.declared_s and decoded_s < self.declared_s - max(1.0, 0.02 * self.declared_s):
            notes.append(
                f"decoded {decoded_s:.1f} s of the {self.declared_s:.1f} s the file declares; "
                "it looks truncated"
            )
        return tuple(notes)


class _Buffer:
    """A float32 array that grows by doubling, so a long decode is not a list of small chunks."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1024), dtype=np.float32)
        self.size = 0

    def extend(self, values: npt.NDArray[np.float32]) -> None:
        end = self.size + values.size
        if end > self._data.size:
            grown = np.empty(max(end, 2 * self._data.size), dtype=np.float32)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : end] = values
        self.size = end

    def array(self) -> npt.NDArray[np.float32]:
        if self._data.size > self.size + self.size // 4 + 1024:  # do not keep a mostly empty tail alive
            return self._data[: self.size].copy()
        return self._data[: self.size]


def _declared_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * Fraction(stream.time_base))
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, av.error.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{seconds:.1f} s"
