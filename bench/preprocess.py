"""Preprocess against ``ffmpeg -i IN -ar 16000 -ac 1 -af loudnorm=I=-16:TP=-1.5:LRA=11 OUT``.

There is no ``ffmpeg`` binary on the machine; PyAV carries FFmpeg's own libraries, ``loudnorm``
included, so the command runs as the filter graph ffmpeg builds for it: decode, the ``-af`` chain
(``loudnorm``, which works at 192 kHz inside), then the conversion that ``-ar 16000 -ac 1`` appends
after it (``aresample=16000``, ``aformat`` mono, 16-bit), and a WAV muxed to ``OUT``.

In that order ``loudnorm`` normalizes the input's channels (stereo here) and the downmix comes after:
BS.1770 sums the channels' energy, so dual-mono speech measures 3 LU louder as stereo than as its
mono mixdown, and the command's mono output lands near -19 LUFS, not -16. So a second graph is
measured too, downmixing and resampling first (``aresample=16000,aformat=mono,loudnorm,...``): it
normalizes the same mono signal Escriba does, and its output is comparable in loudness (it also has
half the channels to filter, so it is faster than the command).

Escriba's side is the whole :meth:`Preprocessor.preprocess`, file to file as the worker runs it:
hash, decode, downmix, resample, normalize (two passes over a spool file), limit peaks, 16-bit FLAC,
hash of the output. All outputs are read back from their bytes and measured with the same BS.1770
meter (``escriba.audio.loudness.integrated_loudness``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from escriba.audio.decode import decode_audio
from escriba.audio.loudness import integrated_loudness, normalize_loudness
from escriba.audio.pcm import SAMPLE_RATE_HZ, decode_pcm, encode_pcm, quantize
from escriba.common.settings import load
from escriba.preprocess.engine import Preprocessor
from escriba.preprocess.settings import PreprocessSettings

LOUDNORM = "I=-16:TP=-1.5:LRA=11"


#: Filter chains after the decoder: the command as ffmpeg builds it, and downmix-first.
CHAINS = {
    "command": (
        ("loudnorm", LOUDNORM),
        ("aresample", str(SAMPLE_RATE_HZ)),
        ("aformat", "sample_fmts=s16:channel_layouts=mono"),
    ),
    "mono_first": (
        ("aresample", str(SAMPLE_RATE_HZ)),
        ("aformat", "sample_fmts=fltp:channel_layouts=mono"),
        ("loudnorm", LOUDNORM),
        ("aresample", str(SAMPLE_RATE_HZ)),
        ("aformat", "sample_fmts=s16:channel_layouts=mono"),
    ),
}


@dataclass(frozen=True)
class PreprocessComparison:
    audio_s: float
    escriba_s: float
    escriba_lufs: float
    #: By chain name: best wall seconds and output loudness (LUFS).
    ffmpeg_s: dict[str, float]
    ffmpeg_lufs: dict[str, float]
    #: Where Escriba's time goes: seconds per step of one run.
    profile: dict[str, float]

    def speed_ratio(self, chain: str) -> float:
        return self.ffmpeg_s[chain] / self.escriba_s

    def loudness_gap_lu(self, chain: str) -> float:
        return abs(self.escriba_lufs - self.ffmpeg_lufs[chain])


def _pull_all(graph: av.filter.Graph, out: list[Any]) -> None:
    while True:
        try:
            out.append(graph.pull())
        except (BlockingIOError, av.error.EOFError):
            return


def ffmpeg_loudnorm(data: bytes, chain: str = "command") -> bytes:
    """16 kHz mono 16-bit WAV bytes, as the ffmpeg command writes them (``chain``: see CHAINS)."""
    frames: list[Any] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        graph = av.filter.Graph()
        source = graph.add_abuffer(template=stream)
        nodes = [source, *(graph.add(name, args) for name, args in CHAINS[chain]), graph.add("abuffersink")]
        for upstream, downstream in itertools.pairwise(nodes):
            upstream.link_to(downstream)
        graph.configure()
        for frame in container.decode(stream):
            graph.push(frame)
            _pull_all(graph, frames)
        graph.push(None)
        _pull_all(graph, frames)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as out:
        wav = out.add_stream("pcm_s16le", rate=SAMPLE_RATE_HZ)
        wav.codec_context.layout = "mono"
        for frame in frames:
            frame.pts = None
            out.mux(wav.encode(frame))
        out.mux(wav.encode(None))
    return buffer.getvalue()


def escriba_preprocess(data: bytes) -> bytes:
    """A normalized copy (what ``loudnorm`` makes), not the pipeline's default signal-as-recorded
    canonical audio, so both sides do the same work."""
    settings = load(PreprocessSettings, {})
    with tempfile.TemporaryDirectory(prefix="escriba-bench-preprocess-") as tmp:
        # As the worker runs it: canonical audio written to a file, a spool for the normalization.
        output = Path(tmp) / "canonical.flac"
        Preprocessor(settings).preprocess(
            data, output, filename="bench.mp3", target_lufs=settings.target_lufs, work_dir=Path(tmp)
        )
        return output.read_bytes()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def escriba_profile(data: bytes) -> dict[str, float]:
    """Seconds of each step :meth:`Preprocessor.run` takes, run one by one with its own functions."""
    settings = load(PreprocessSettings, {})
    hash_s, _ = _timed(lambda: hashlib.sha256(data).hexdigest())
    decode_s, decoded = _timed(
        lambda: decode_audio(data, max_duration_s=settings.max_duration_s, threads=settings.decoder_threads)
    )
    normalize_s, normalized = _timed(
        lambda: normalize_loudness(
            decoded.samples,
            decoded.sample_rate_hz,
            target_lufs=settings.target_lufs,
            ceiling_dbfs=settings.peak_ceiling_dbfs,
        )
    )
    encode_s, encoded = _timed(lambda: encode_pcm(quantize(normalized.samples), "flac"))
    output_hash_s, _ = _timed(lambda: hashlib.sha256(encoded).hexdigest())
    return {
        "hash_input_s": hash_s,
        "decode_downmix_resample_s": decode_s,
        "loudness_normalize_and_limit_s": normalize_s,
        "quantize_and_flac_s": encode_s,
        "hash_output_s": output_hash_s,
    }


def compare(data: bytes, audio_s: float, runs: int = 2) -> PreprocessComparison:
    """Best wall time of ``runs`` for each side on the same bytes; loudness of each output."""
    escriba_runs = [_timed(lambda: escriba_preprocess(data)) for _ in range(runs)]
    escriba_s, escriba_audio = min(escriba_runs, key=lambda run: run[0])
    ffmpeg_s: dict[str, float] = {}
    ffmpeg_lufs: dict[str, float] = {}
    for chain in CHAINS:
        chain_runs = [_timed(functools.partial(ffmpeg_loudnorm, data, chain)) for _ in range(runs)]
        seconds, output = min(chain_runs, key=lambda run: run[0])
        ffmpeg_s[chain] = seconds
        ffmpeg_lufs[chain] = integrated_loudness(decode_pcm(output), SAMPLE_RATE_HZ)
    return PreprocessComparison(
        audio_s=audio_s,
        escriba_s=escriba_s,
        escriba_lufs=integrated_loudness(decode_pcm(escriba_audio), SAMPLE_RATE_HZ),
        ffmpeg_s=ffmpeg_s,
        ffmpeg_lufs=ffmpeg_lufs,
        profile=escriba_profile(data),
    )
