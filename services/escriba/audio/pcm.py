"""The canonical audio every stage exchanges: 16 kHz mono 16-bit PCM, as FLAC or WAV bytes.

Preprocessing writes it once; transcription and the pipeline read it back many times, so reading is
the fast path (WAV through the standard library, FLAC through PyAV with no resampling). 16-bit is
lossless for what Whisper consumes and halves storage against float32; FLAC halves it again.

Encoding is deterministic for a given PyAV build (bit-exact flags keep encoder version strings out
of the FLAC header), so the hash of the bytes can serve as a cache key. :class:`PcmWriter` encodes a
stream of chunks straight into a file (the same bytes :func:`encode_pcm` gives for the whole array:
FLAC frames are cut at the same 4096-sample boundaries whatever the chunks), so hours of audio never
need their samples in memory.
"""

from __future__ import annotations

import io
import struct
import wave
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, get_args

import av
import av.container
import av.error
import numpy as np
import numpy.typing as npt

from escriba.audio.errors import AudioTooLongError, CorruptAudioError, NotAudioError

SAMPLE_RATE_HZ: Final = 16000
Encoding = Literal["flac", "wav"]
ENCODINGS: Final[tuple[str, ...]] = get_args(Encoding)

_FULL_SCALE: Final = 32768.0
_FLAC_BLOCK = 4096


def to_int16(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Round float samples to 16-bit (values outside [-1, 1) clip to the 16-bit range)."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(_FULL_SCALE))
    clipped: npt.NDArray[np.int16] = np.clip(scaled, -_FULL_SCALE, _FULL_SCALE - 1).astype(np.int16)
    return clipped


def from_int16(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """The exact float value of each 16-bit sample (``to_int16`` of the result gives them back)."""
    return samples.astype(np.float32) * np.float32(1 / _FULL_SCALE)


def quantize(samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """``samples`` as they will read back from the encoded bytes."""
    return from_int16(to_int16(samples))


def encode_pcm(
    samples: npt.NDArray[np.floating], encoding: str = "flac", *, sample_rate_hz: int = SAMPLE_RATE_HZ
) -> bytes:
    """Mono float samples to 16-bit FLAC or WAV bytes."""
    buf = io.BytesIO()
    with PcmWriter(buf, encoding, sample_rate_hz=sample_rate_hz) as writer:
        writer.write(samples)
    return buf.getvalue()


class PcmWriter:
    """Canonical audio written chunk by chunk to a file (a path, or a seekable binary file object).

    Use as a context manager: leaving it finishes the file (FLAC's and WAV's headers record the
    length, so they are completed at the end). Leaving it on an exception closes it unfinished.
    """

    def __init__(
        self, target: Path | IO[bytes], encoding: str = "flac", *, sample_rate_hz: int = SAMPLE_RATE_HZ
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
        self.encoding = encoding
        self.rate = sample_rate_hz
        self.samples = 0
        self._file: IO[bytes] = target.open("wb") if isinstance(target, Path) else target
        self._owns_file = isinstance(target, Path)
        self._pending = np.zeros(0, dtype=np.int16)  # FLAC: the start of the next 4096-sample frame
        self._wav: wave.Wave_write | None = None
        self._flac: av.container.OutputContainer | None = None
        if encoding == "wav":
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115 (closed in close())
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate_hz)
        else:
            self._flac = av.open(
                self._file, mode="w", format="flac", container_options={"fflags": "+bitexact"}
            )
            self._stream = self._flac.add_stream("flac", rate=sample_rate_hz, options={"flags": "+bitexact"})
            self._stream.codec_context.layout = "mono"
            self._stream.codec_context.format = "s16"

    def write(self, samples: npt.NDArray[np.floating]) -> None:
        """Append float samples (rounded to 16-bit as :func:`to_int16` does)."""
        self.write_int16(to_int16(np.asarray(samples).reshape(-1)))

    def write_int16(self, pcm: npt.NDArray[np.int16]) -> None:
        if self._wav is not None:
            self._wav.writeframes(pcm.astype("<i2", copy=False).tobytes())
            self.samples += pcm.size
            return
        if self._pending.size:
            pcm = np.concatenate((self._pending, pcm))
        whole = pcm.size - pcm.size % _FLAC_BLOCK
        for start in range(0, whole, _FLAC_BLOCK):
            self._encode_frame(pcm[start : start + _FLAC_BLOCK])
        self._pending = pcm[whole:].copy()

    def _encode_frame(self, block: npt.NDArray[np.int16]) -> None:
        assert self._flac is not None
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block)[None, :], format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.samples
        frame.time_base = Fraction(1, self.rate)
        self._flac.mux(self._stream.encode(frame))
        self.samples += block.size

    def close(self) -> None:
        """Finish the file: the last partial FLAC frame, the encoder's flush, the headers."""
        try:
            if self._flac is not None:
                if self._pending.size:
                    self._encode_frame(self._pending)
                    self._pending = np.zeros(0, dtype=np.int16)
                self._flac.mux(self._stream.encode(None))
                self._flac.close()
            elif self._wav is not None:
                self._wav.close()
        finally:
            self._flac = self._wav = None
            if self._owns_file:
                self._file.close()

    def abandon(self) -> None:
        """Close without finishing (the output is discarded by the caller)."""
        try:
            if self._flac is not None:
                self._flac.close()
            elif self._wav is not None:
                self._wav.close()  # else its finalizer would write a header into a closed file
        except (av.error.FFmpegError, OSError, wave.Error):
            pass
        finally:
            self._flac = self._wav = None
            if self._owns_file:
                self._file.close()

    def __enter__(self) -> PcmWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def decode_pcm(
    data: bytes, *, expected_rate_hz: int | None = SAMPLE_RATE_HZ, max_duration_s: float | None = None
) -> npt.NDArray[np.float32]:
    """Read canonical audio (16-bit mono FLAC or WAV) back to float32 samples.

    Anything else (another sample rate, stereo, another bit depth, another format) is refused:
    canonical audio is produced by preprocessing, and a mismatch means a caller skipped it.
    ``max_duration_s`` bounds what is decoded when the bytes come from a caller rather than from
    preprocessing: a few hundred kB of FLAC can hold hours of silence, so it is enforced while
    decoding (:class:`AudioTooLongError`), never after the samples are in memory.
    """
    if data.startswith(b"RIFF"):
        pcm, rate = _decode_wav(data, max_duration_s)
    elif data.startswith(b"fLaC"):
        pcm, rate = _decode_flac(data, max_duration_s)
    else:
        raise NotAudioError("canonical audio must be 16-bit mono FLAC or WAV; got neither")
    if expected_rate_hz is not None and rate != expected_rate_hz:
        raise CorruptAudioError(f"canonical audio must be {expected_rate_hz} Hz; got {rate} Hz")
    return from_int16(pcm)


def _decode_wav(data: bytes, max_duration_s: float | None) -> tuple[npt.NDArray[np.int16], int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as src:
            channels, width, rate = src.getnchannels(), src.getsampwidth(), src.getframerate()
            raw = src.readframes(src.getnframes())
    except (wave.Error, EOFError, RuntimeError, ValueError, OverflowError, struct.error) as exc:
        # The standard library's parser of untrusted bytes: besides wave.Error, a chunk size past the
        # end makes it seek out of its chunk (RuntimeError), and odd fields fail to unpack.
        raise CorruptAudioError(
            f"canonical WAV audio cannot be read: {str(exc) or type(exc).__name__}"
        ) from exc
    if channels != 1 or width != 2:
        raise CorruptAudioError(
            f"canonical WAV audio must be mono 16-bit; got {channels} channel(s), {8 * width}-bit"
        )
    usable = len(raw) - len(raw) % 2
    # WAV is not compressed, so its bytes (bounded by the upload limit) bound its length; checked
    # on what is there, not on the header's claim.
    _check_duration(usable // 2, rate, max_duration_s)
    return np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16), rate


def _decode_flac(data: bytes, max_duration_s: float | None) -> tuple[npt.NDArray[np.int16], int]:
    chunks: list[npt.NDArray[np.int16]] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format="flac", metadata_errors="replace") as src:
            stream = src.streams.audio[0]
            ctx = stream.codec_context
            if ctx.channels != 1:
                raise CorruptAudioError(f"canonical FLAC audio must be mono; got {ctx.channels} channels")
            rate = ctx.sample_rate
            for frame in src.decode(stream):
                if frame.format.name not in ("s16", "s16p"):
                    raise CorruptAudioError(f"canonical FLAC audio must be 16-bit; got {frame.format.name}")
                chunks.append(np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1))
                decoded += chunks[-1].size
                _check_duration(decoded, rate, max_duration_s)
    except av.error.FFmpegError as exc:
        raise CorruptAudioError(f"canonical FLAC audio cannot be read: {exc}") from exc
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return pcm.astype(np.int16, copy=False), rate


def _check_duration(samples: int, rate: int, max_duration_s: float | None) -> None:
    if max_duration_s is None or rate <= 0 or samples <= max_duration_s * rate:
        return
    raise AudioTooLongError(
        f"the audio is longer than the limit of {max_duration_s:g} s (at least {samples / rate:.1f} s): "
        "split the recording or trim it",
        limit_s=max_duration_s,
        decoded_s=samples / rate,
    )
