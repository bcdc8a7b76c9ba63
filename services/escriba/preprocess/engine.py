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

Memory does not grow with the recording's length (issue 15: it was about 1 GiB an hour, and a 4-hour
meeting took its pod down). :meth:`Preprocessor.preprocess` decodes in one-second chunks and writes
the canonical audio to a file as they come, measuring loudness on the way; only a normalized copy
needs a second pass (BS.1770's gates need the whole recording before a gain can be chosen), which
reads the decoded samples back from a spool file in the work directory. Separate channels are
decoded once, each encoded to its own file as it comes, and compared by running sums. What a job
holds is therefore :data:`JOB_MEMORY_BYTES` plus :data:`JOB_MEMORY_BYTES_PER_AUDIO_S` per second
of audio (the loudness meters' hop energies), whatever the format; the chart's limits are checked
against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from escriba.audio.decode import DecodeSummary, decode_stream
from escriba.audio.loudness import (
    Levels,
    LoudnessMeter,
    apply_gain,
    limit_window,
    limiter_context,
    peak_ceiling,
    search_gain,
)
from escriba.audio.pcm import ENCODINGS, SAMPLE_RATE_HZ, PcmWriter, decode_pcm, from_int16, to_int16
from escriba.audio.spool import SampleSpool
from escriba.preprocess.errors import InputTooLargeError, InvalidOptionError
from escriba.preprocess.settings import PreprocessSettings

log = logging.getLogger(__name__)

#: Bump when a change here alters the canonical bytes produced for the same input and options,
#: so cached results of the old code are not served. 2: the signal is kept (no normalization).
PIPELINE_VERSION: Final = 2
_HASH_CHUNK = 1 << 20

#: What one preprocess job holds at most beyond the process's own size, whatever the input: the
#: decoder's buffers and one-second chunks, a spool window and the limiter's copies of it, one FLAC
#: frame, the hash's read buffer. Measured (tests/unit/test_preprocess_memory.py checks it with
#: psutil on 10- and 60-minute files) with room to spare.
JOB_MEMORY_BYTES: Final = 64 * 2**20
#: And per second of audio: the loudness meters' energy of each 100 ms hop (10 float64 a second, the
#: input's and a normalization pass's) and the block arrays their gates build from them at the end.
JOB_MEMORY_BYTES_PER_AUDIO_S: Final = 2048
#: The process itself before any job (Python, numpy, scipy, PyAV, gRPC, NATS clients), measured
#: as ``escriba serve preprocess`` idles, rounded up.
PROCESS_BASE_BYTES: Final = 320 * 2**20


def job_memory_bound(max_duration_s: float) -> int:
    """The most one preprocess job adds to its process's resident memory (bytes)."""
    return JOB_MEMORY_BYTES + math.ceil(JOB_MEMORY_BYTES_PER_AUDIO_S * max_duration_s)


def process_memory_bound(max_duration_s: float, jobs: int) -> int:
    """The most a preprocess process running ``jobs`` jobs at once holds (bytes)."""
    return PROCESS_BASE_BYTES + jobs * job_memory_bound(max_duration_s)


def spool_disk_bound(max_duration_s: float, max_input_bytes: int, *, channels: int = 1) -> int:
    """The most disk one job's work directory takes (bytes): the upload, the canonical audio (16-bit,
    never over its raw size plus headers), and the float32 spool of a normalized copy or the files of
    separate channels (the larger; FLAC is usually far under it, silence next to nothing)."""
    samples = math.ceil(max_duration_s * SAMPLE_RATE_HZ)
    canonical = 2 * samples + 2**20
    spools = max(4 * samples, 2 * samples * max(1, min(channels, MAX_SEPARATE_CHANNELS)))
    return max_input_bytes + canonical + spools


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


@dataclass(frozen=True, slots=True)
class ChannelFile:
    """One input channel's canonical mono audio, written to ``path``."""

    channel: int
    path: Path
    normalized_sha256: str


def _rms_dbfs(sum_of_squares: float, count: int) -> float:
    if count == 0:
        return -math.inf
    rms = math.sqrt(sum_of_squares / count)
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class ChannelComparer:
    """Running sums that tell silent and duplicated channels apart without keeping the audio: the
    energy of each channel and of the difference of each pair, chunk by chunk."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.count = 0
        self._energy = np.zeros(channels, dtype=np.float64)
        self._pairs = list(itertools.combinations(range(channels), 2))
        self._differences = np.zeros(len(self._pairs), dtype=np.float64)

    def add(self, chunk: npt.NDArray[np.float32]) -> None:
        """``chunk``: ``(n, channels)`` samples as they will be encoded (16-bit values)."""
        block = chunk.astype(np.float64)
        self.count += block.shape[0]
        self._energy += np.einsum("ij,ij->j", block, block)
        for index, (a, b) in enumerate(self._pairs):
            difference = block[:, b] - block[:, a]
            self._differences[index] += float(difference @ difference)

    def distinct(self) -> list[int]:
        """The channels worth a transcript each: not silent, and not a copy of one kept before (mono
        saved as stereo, or a channel mirrored onto another)."""
        level = [_rms_dbfs(float(e), self.count) for e in self._energy]
        kept: list[int] = []
        for index in range(self.channels):
            if level[index] < SILENT_CHANNEL_DBFS:
                continue
            duplicate = False
            for other in kept:
                pair = self._pairs.index((other, index))
                difference = _rms_dbfs(float(self._differences[pair]), self.count)
                if difference < max(level[index], level[other]) - DUPLICATE_CHANNEL_DB:
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
        """Preprocess ``data`` (the upload's bytes, or a path to it) into bytes in memory.

        ``target_lufs`` asks for a copy normalized to that loudness (``None``: as the settings say);
        ``encoding`` overrides the setting (``None`` or ``""`` keeps it). Raises the errors of
        :mod:`escriba.preprocess.errors`. The result holds the canonical audio and its samples, so
        its size grows with the recording: the worker and the servicer use :meth:`preprocess`.
        """
        with tempfile.TemporaryDirectory(prefix="escriba-preprocess-") as tmp:
            output = Path(tmp) / "canonical"
            info = self.preprocess(
                data,
                output,
                filename=filename,
                target_lufs=target_lufs,
                encoding=encoding,
                work_dir=Path(tmp),
            )
            audio = output.read_bytes()
        return PreprocessResult(audio=audio, samples=decode_pcm(audio), info=info)

    def preprocess(
        self,
        data: bytes | Path,
        output: Path,
        *,
        filename: str = "",
        target_lufs: float | None = None,
        encoding: str | None = None,
        work_dir: Path | None = None,
    ) -> PreprocessInfo:
        """Preprocess ``data`` into the canonical audio file ``output``; return its description.

        A normalized copy spools the decoded samples in a temporary directory under ``work_dir``
        (default: the system's), removed before returning, however the call ends.
        """
        target, chosen_encoding = self._options(target_lufs, encoding)
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        self._check_size(size, filename)
        sha = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else sha256_file(data)
        meter = LoudnessMeter(SAMPLE_RATE_HZ)
        if target is None:
            with PcmWriter(output, chosen_encoding) as writer:

                def measure_and_write(chunk: npt.NDArray[np.float32]) -> None:
                    meter.add(chunk)
                    writer.write(chunk)

                decoded = self._decode(data, filename, measure_and_write)
            lufs = meter.loudness()
            levels = Levels(lufs, lufs, 0.0, 0.0)
        else:
            with (
                tempfile.TemporaryDirectory(prefix="escriba-spool-", dir=work_dir) as tmp,
                SampleSpool(Path(tmp) / "decoded.f32") as spool,
            ):

                def measure_and_spool(chunk: npt.NDArray[np.float32]) -> None:
                    meter.add(chunk)
                    spool.append(chunk)

                decoded = self._decode(data, filename, measure_and_spool)
                levels = self._normalize(spool, meter.loudness(), target, output, chosen_encoding)
        info = PreprocessInfo(
            sha256=sha,
            duration_s=decoded.duration_s,
            source_sample_rate_hz=decoded.source.sample_rate_hz,
            source_channels=decoded.source.channels,
            source_container=decoded.source.container,
            source_codec=decoded.source.codec,
            source_bytes=size,
            input_loudness_lufs=levels.input_lufs,
            output_loudness_lufs=levels.output_lufs,
            gain_db=levels.gain_db,
            sample_rate_hz=decoded.sample_rate_hz,
            encoding=chosen_encoding,
            normalized_sha256=sha256_file(output),
            limiter_reduction_db=levels.limiter_reduction_db,
            skipped_packets=decoded.skipped_packets,
            warnings=decoded.warnings,
        )
        if info.silent:
            log.info("preprocess: %s (%s) is silent", filename or "upload", sha[:12])
        for warning in info.warnings:
            log.warning("preprocess: %s (%s): %s", filename or "upload", sha[:12], warning)
        return info

    def _decode(
        self,
        data: bytes | Path,
        filename: str,
        sink: Callable[[npt.NDArray[np.float32]], None],
        channels: int | None = None,
    ) -> DecodeSummary:
        return decode_stream(
            data,
            sink,
            max_duration_s=self.settings.max_duration_s,
            threads=self.settings.decoder_threads,
            filename=filename,
            channels=channels,
        )

    def _normalize(
        self, spool: SampleSpool, input_lufs: float, target: float, output: Path, encoding: str
    ) -> Levels:
        """Gain, limit and encode the spooled samples, one window at a time.

        The first pass of the gain search also writes ``output`` (usually the only pass: without
        limiting it is exact); later passes only measure, and the chosen gain is written once more at
        the end if it is not the first. Writing on every pass cost a FLAC encode per pass, twice the
        whole-array code's time on audio the limiter touches.
        """
        ceiling = peak_ceiling(self.settings.peak_ceiling_dbfs)
        context = limiter_context(SAMPLE_RATE_HZ)
        written: list[float | None] = []

        def limited_windows(gain_db: float | None) -> Iterator[tuple[npt.NDArray[np.float32], float]]:
            for window, lead, length in spool.windows(context):
                scaled = apply_gain(np.asarray(window, dtype=np.float32), gain_db)
                yield limit_window(scaled, ceiling, SAMPLE_RATE_HZ, lead=lead, length=length)

        def write(gain_db: float | None) -> None:
            with PcmWriter(output, encoding) as writer:
                for limited, _ in limited_windows(gain_db):
                    writer.write(limited)

        def run_pass(gain_db: float | None) -> tuple[float, float]:
            meter = LoudnessMeter(SAMPLE_RATE_HZ)
            deepest = 0.0
            if written:
                for limited, reduction in limited_windows(gain_db):
                    deepest = max(deepest, reduction)
                    meter.add(limited)
            else:
                written.append(gain_db)
                with PcmWriter(output, encoding) as writer:
                    for limited, reduction in limited_windows(gain_db):
                        deepest = max(deepest, reduction)
                        meter.add(limited)
                        writer.write(limited)
            return meter.loudness(), deepest

        levels = search_gain(input_lufs, target_lufs=target, run_pass=run_pass)
        chosen = levels.gain_db if math.isfinite(input_lufs) else None
        if written != [chosen]:
            write(chosen)
        return levels

    def split_channels(
        self, data: bytes | Path, *, channels: int, filename: str = "", encoding: str | None = None
    ) -> list[ChannelAudio]:
        """:meth:`split_channels_to` with the audio in memory (tests, small inputs)."""
        with tempfile.TemporaryDirectory(prefix="escriba-channels-") as tmp:
            files = self.split_channels_to(
                data, Path(tmp), channels=channels, filename=filename, encoding=encoding
            )
            return [ChannelAudio(f.channel, f.path.read_bytes(), f.normalized_sha256) for f in files]

    def split_channels_to(
        self,
        data: bytes | Path,
        out_dir: Path,
        *,
        channels: int,
        filename: str = "",
        encoding: str | None = None,
    ) -> list[ChannelFile]:
        """Each distinct channel of a ``channels``-channel input as canonical mono audio in ``out_dir``
        (the signal as recorded: per-channel transcription never normalizes). One entry or none means
        there is nothing to separate: transcribe the mixdown.

        One decode keeps the channels apart and encodes each into ``out_dir`` as it goes, while
        running sums find the silent and the duplicated ones; their files are removed at the end
        (a silent channel's FLAC is next to nothing while it lasts).
        """
        _, chosen_encoding = self._options(None, encoding)
        count = max(1, min(channels, MAX_SEPARATE_CHANNELS))
        comparer = ChannelComparer(count)
        paths = [out_dir / f"ch{index}.{chosen_encoding}" for index in range(count)]
        with contextlib.ExitStack() as stack:
            writers = [stack.enter_context(PcmWriter(path, chosen_encoding)) for path in paths]

            def compare_and_encode(chunk: npt.NDArray[np.float32]) -> None:
                pcm = to_int16(chunk)
                comparer.add(from_int16(pcm))
                for index, writer in enumerate(writers):
                    writer.write_int16(np.ascontiguousarray(pcm[:, index]))

            try:
                self._decode(data, filename, compare_and_encode, channels=count)
            except BaseException:
                for path in paths:
                    path.unlink(missing_ok=True)
                raise
        kept = comparer.distinct()
        for index, path in enumerate(paths):
            if index not in kept:
                path.unlink(missing_ok=True)
        return [ChannelFile(index, paths[index], sha256_file(paths[index])) for index in kept]

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
