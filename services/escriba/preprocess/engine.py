"""The preprocess engine: any upload to canonical 16 kHz mono audio, the signal as recorded.

The canonical audio is what the model decodes, so it is not loudness-normalized by default: a gain of
+28 dB with a peak limiter on a quiet recording with one loud click cut the click's neighbourhood by
26 dB and cost accuracy, while Whisper's log-mel front end (log scale, then clamped to 8 dB under the
window's maximum and rescaled) needs no level normalization at all. Loudness is still measured and
reported. A normalized copy, for people to listen to, is what a ``PreprocessService`` caller gets by
asking for a target loudness (or every upload, with ``ESCRIBA_PREPROCESS_NORMALIZE_LOUDNESS``).

Both transports (the ``PreprocessService`` servicer and the JetStream worker) call
:meth:`Preprocessor.run` from a worker thread. It keeps no state between calls (PyAV containers,
resamplers and buffers are per call), so one instance serves any number of threads.

Order matters for hostile input: the byte limit is checked from the length or the file size before
anything is hashed or decoded, and the duration limit is enforced while decoding.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from escriba.audio.decode import decode_audio
from escriba.audio.loudness import Normalized, integrated_loudness, normalize_loudness
from escriba.audio.pcm import ENCODINGS, SAMPLE_RATE_HZ, encode_pcm, quantize
from escriba.preprocess.errors import InputTooLargeError, InvalidOptionError
from escriba.preprocess.settings import PreprocessSettings

log = logging.getLogger(__name__)

#: Bump when a change here alters the canonical bytes produced for the same input and options,
#: so cached results of the old code are not served. 2: the signal is kept (no normalization).
PIPELINE_VERSION: Final = 2
_HASH_CHUNK = 1 << 20


#: Channels transcribed separately at most (the rest of a 5.1 or 7.1 mix is music and effects).
MAX_SEPARATE_CHANNELS = 8


@dataclass(frozen=True, slots=True)
class PreprocessInfo:
    sha256: str  # hex sha256 of the input bytes
    duration_s: float  # of the decoded (and canonical) audio
    source_sample_rate_hz: int
    source_channels: int
    source_container: str  # FFmpeg demuxer name, e.g. "mp3", "mov,mp4,m4a,3gp,3g2,mj2"
    source_codec: str  # e.g. "mp3", "aac", "opus"
    source_bytes: int
    # BS.1770 integrated loudness of the 16 kHz mono mixdown (so input and output compare like for
    # like); -inf: silence. Without normalization the output equals the input and the gain is 0.
    input_loudness_lufs: float
    output_loudness_lufs: float
    gain_db: float
    sample_rate_hz: int  # of the canonical audio: 16000
    encoding: str  # "flac" or "wav"
    normalized_sha256: str  # hex sha256 of the canonical audio bytes
    limiter_reduction_db: float = 0.0  # deepest cut of the peak limiter, dB
    skipped_packets: int = 0  # undecodable packets skipped (damaged regions)
    warnings: tuple[str, ...] = ()  # e.g. the file looks truncated

    @property
    def silent(self) -> bool:
        """True when the input is silence (below the -70 LUFS gate) and was left unamplified."""
        return not math.isfinite(self.input_loudness_lufs)


@dataclass(frozen=True, slots=True)
class PreprocessResult:
    audio: bytes  # canonical 16 kHz mono 16-bit FLAC or WAV
    samples: npt.NDArray[np.float32]  # exactly what ``audio`` decodes to
    info: PreprocessInfo


#: A channel quieter than this (RMS, dBFS) holds no speech worth a transcript of its own.
SILENT_CHANNEL_DBFS = -60.0
#: Channels this alike (RMS of their difference, dB below the louder one) are one signal saved twice.
DUPLICATE_CHANNEL_DB = 40.0


@dataclass(frozen=True, slots=True)
class ChannelAudio:
    """One input channel as canonical mono audio, to be transcribed on its own."""

    channel: int
    audio: bytes
    normalized_sha256: str


def _rms_dbfs(samples: npt.NDArray[np.float32]) -> float:
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def distinct_channels(channels: Sequence[npt.NDArray[np.float32]]) -> list[int]:
    """The channels worth a transcript each: not silent, and not a copy of one kept before (mono
    saved as stereo, or a channel mirrored onto another)."""
    kept: list[int] = []
    for index, samples in enumerate(channels):
        level = _rms_dbfs(samples)
        if level < SILENT_CHANNEL_DBFS:
            continue
        duplicate = False
        for other in kept:
            reference = channels[other]
            n = min(reference.size, samples.size)
            difference = _rms_dbfs(samples[:n] - reference[:n])
            if difference < max(level, _rms_dbfs(reference)) - DUPLICATE_CHANNEL_DB:
                duplicate = True
                break
        if not duplicate:
            kept.append(index)
    return kept


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _size_label(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class Preprocessor:
    """Decode, resample to 16 kHz mono, measure (and, when asked, normalize) loudness, encode
    losslessly, hash."""

    def __init__(self, settings: PreprocessSettings) -> None:
        self.settings = settings

    def run(
        self,
        data: bytes | Path,
        *,
        filename: str = "",
        target_lufs: float | None = None,
        encoding: str | None = None,
    ) -> PreprocessResult:
        """Preprocess ``data`` (the upload's bytes, or a path to it).

        ``target_lufs`` asks for a copy normalized to that loudness (``None``: as the settings say);
        ``encoding`` overrides the setting (``None`` or ``""`` keeps it). Raises the errors of
        :mod:`escriba.preprocess.errors`.
        """
        target, chosen_encoding = self._options(target_lufs, encoding)
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        self._check_size(size, filename)
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else sha256_file(data)
        decoded = decode_audio(
            data,
            max_duration_s=self.settings.max_duration_s,
            threads=self.settings.decoder_threads,
            filename=filename,
        )
        if target is None:
            lufs = integrated_loudness(decoded.samples, decoded.sample_rate_hz)
            normalized = Normalized(decoded.samples, lufs, lufs, 0.0, 0.0)
        else:
            normalized = normalize_loudness(
                decoded.samples,
                decoded.sample_rate_hz,
                target_lufs=target,
                ceiling_dbfs=self.settings.peak_ceiling_dbfs,
            )
        samples = quantize(normalized.samples)
        audio = encode_pcm(samples, chosen_encoding, sample_rate_hz=decoded.sample_rate_hz)
        source = decoded.source
        info = PreprocessInfo(
            sha256=sha,
            duration_s=decoded.duration_s,
            source_sample_rate_hz=source.sample_rate_hz,
            source_channels=source.channels,
            source_container=source.container,
            source_codec=source.codec,
            source_bytes=size,
            input_loudness_lufs=normalized.input_lufs,
            output_loudness_lufs=normalized.output_lufs,
            gain_db=normalized.gain_db,
            sample_rate_hz=decoded.sample_rate_hz,
            encoding=chosen_encoding,
            normalized_sha256=hashlib.sha256(audio).hexdigest(),
            limiter_reduction_db=normalized.limiter_reduction_db,
            skipped_packets=decoded.skipped_packets,
            warnings=decoded.warnings,
        )
        if info.silent:
            log.info("preprocess: %s (%s) is silent", filename or "upload", sha[:12])
        for warning in info.warnings:
            log.warning("preprocess: %s (%s): %s", filename or "upload", sha[:12], warning)
        return PreprocessResult(audio=audio, samples=samples, info=info)

    def split_channels(
        self, data: bytes | Path, *, channels: int, filename: str = "", encoding: str | None = None
    ) -> list[ChannelAudio]:
        """Each distinct channel of a ``channels``-channel input as canonical mono audio (the signal as
        recorded: per-channel transcription never normalizes). One entry or none means there is
        nothing to separate: transcribe the mixdown."""
        _, chosen_encoding = self._options(None, encoding)
        decoded = [
            quantize(
                decode_audio(
                    data,
                    max_duration_s=self.settings.max_duration_s,
                    threads=self.settings.decoder_threads,
                    filename=filename,
                    channel=index,
                ).samples
            )
            for index in range(max(1, min(channels, MAX_SEPARATE_CHANNELS)))
        ]
        out = []
        for index in distinct_channels(decoded):
            audio = encode_pcm(decoded[index], chosen_encoding, sample_rate_hz=SAMPLE_RATE_HZ)
            out.append(ChannelAudio(index, audio, hashlib.sha256(audio).hexdigest()))
        return out

    def cache_key(
        self, input_sha256: str, *, target_lufs: float | None = None, encoding: str | None = None
    ) -> str:
        """Key of the canonical audio for an input hash and the options that shape the output.

        Valid as a NATS KV key. Changes with the options, the peak ceiling and PIPELINE_VERSION.
        """
        target, chosen_encoding = self._options(target_lufs, encoding)
        loudness = "as-recorded" if target is None else f"{target:.2f}|{self.settings.peak_ceiling_dbfs:.2f}"
        shape = f"v{PIPELINE_VERSION}|{SAMPLE_RATE_HZ}|{loudness}|{chosen_encoding}"
        return f"{input_sha256}.{hashlib.sha256(shape.encode()).hexdigest()[:16]}"

    def _options(self, target_lufs: float | None, encoding: str | None) -> tuple[float | None, str]:
        """The loudness target (``None``: keep the signal) and the encoding of this call."""
        target: float | None = None
        if target_lufs is not None:
            target = float(target_lufs)
        elif self.settings.normalize_loudness:
            target = self.settings.target_lufs
        if target is not None and not -70.0 <= target <= 0.0:  # also refuses NaN
            raise InvalidOptionError(f"target loudness must be between -70 and 0 LUFS; got {target}")
        chosen = encoding or self.settings.output_encoding
        if chosen not in ENCODINGS:
            raise InvalidOptionError(f"output encoding must be one of {', '.join(ENCODINGS)}; got {chosen!r}")
        return target, chosen

    def _check_size(self, size: int, filename: str) -> None:
        limit = self.settings.max_input_bytes
        if size > limit:
            label = repr(filename) if filename else "the upload"
            raise InputTooLargeError(
                f"{label} is {size} bytes ({_size_label(size)}), over the limit of {limit} bytes "
                f"({_size_label(limit)}); compress it (e.g. to Opus or MP3) or split it",
                limit_bytes=limit,
                actual_bytes=size,
            )
