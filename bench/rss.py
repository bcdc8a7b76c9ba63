"""Peak memory of a transcription worker on a 60-minute recording, and of preprocessing at 10, 60
and 240 minutes.

The parent writes 60 minutes of joined real speech as the canonical 16 kHz mono FLAC a transcription
worker fetches from the object store, then starts a child process that does what the worker does
with it (load the model as ``escriba serve transcription`` does, ``decode_pcm`` the bytes,
``WhisperEngine.transcribe_async`` with the default options) and reports its own peak resident set
(``VmHWM``). The parent samples the child's RSS with psutil as well, so a run stopped at its time
limit still reports the peak reached so far (flagged as incomplete).

Preprocess (issue 15: it held about 1 GiB an hour): :func:`preprocess_input` writes a long upload
cheaply (one minute of real speech, 44.1 kHz stereo with the two channels apart, then a minute of
silence, as MP3 frames repeated: a meeting with pauses, and the small file of long silence that took
pods down), and :func:`measure_preprocess` runs ``python -m bench.rss preprocess MODE PATH`` on it:
the child warms up on a short clip, then preprocesses the upload as the worker does (``plain``: the
signal as recorded; ``normalize``: a loudness-normalized copy; ``channels``: separate channels) and
reports its resident set before the job and its peak (``VmHWM``); the parent samples it with psutil.

Run the children alone: ``python -m bench.rss FLAC_PATH``, ``python -m bench.rss preprocess MODE PATH``.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import psutil

from bench.audio import RATE_HZ, canonical_flac, joined_speech_with_text

PREPROCESS_MODES = ("plain", "normalize", "channels")
#: The normalized copy's target: what a PreprocessService caller would ask for.
NORMALIZE_TARGET_LUFS = -23.0


@dataclass(frozen=True)
class RssResult:
    audio_s: float
    peak_rss_mb: float
    wall_s: float
    complete: bool
    speech_s: float = 0.0
    words: int = 0
    model_rss_mb: float = 0.0


def measure(
    seconds: float = 3600.0, timeout_s: float = 900.0, env: dict[str, str] | None = None
) -> RssResult:
    with tempfile.TemporaryDirectory(prefix="escriba-bench-rss-") as tmp:
        path = Path(tmp) / "long.flac"
        path.write_bytes(canonical_flac(seconds, seed=60))
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.rss", str(path)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
        )
        peak, complete = _sample_peak(child, started, timeout_s, interval_s=0.25)
        out, _ = child.communicate()
        wall_s = time.perf_counter() - started
    if not complete or child.returncode != 0:
        return RssResult(seconds, peak / 2**20, wall_s, False)
    report = json.loads(out.decode().strip().splitlines()[-1])
    return RssResult(
        audio_s=report["audio_s"],
        peak_rss_mb=max(peak / 2**20, report["peak_rss_mb"]),
        wall_s=wall_s,
        complete=True,
        speech_s=report["speech_s"],
        words=report["words"],
        model_rss_mb=report["model_rss_mb"],
    )


@dataclass(frozen=True)
class PreprocessRss:
    mode: str
    audio_s: float
    base_rss_mb: float  # before the job (imports done, codecs warmed up)
    peak_rss_mb: float  # the most the process held during the job (psutil samples and VmHWM)
    wall_s: float

    @property
    def growth_mb(self) -> float:
        return self.peak_rss_mb - self.base_rss_mb


def _minute_of_meeting() -> bytes:
    """One minute of speech then one of silence, 44.1 kHz stereo MP3 without Xing or ID3 headers, so
    copies of it joined end to end are one valid stream."""
    speech, _ = joined_speech_with_text(60.0, seed=15)
    speech = speech[:, : 60 * RATE_HZ]
    left, right = speech[0], np.roll(speech[1], RATE_HZ // 10)  # two different channels
    # A tenth of a second short of the minute: the encoder's delay and padding make up for it, so
    # four hours of copies stay under the default 4-hour limit.
    silence = np.zeros((2, 60 * RATE_HZ - RATE_HZ // 10), np.float32)
    both = np.concatenate([np.stack([left, right]), silence], axis=1)
    buf = io.BytesIO()
    options = {"write_xing": "0", "id3v2_version": "0"}
    with av.open(buf, mode="w", format="mp3", container_options=options) as out:
        stream = out.add_stream("libmp3lame", rate=RATE_HZ)
        stream.codec_context.layout = "stereo"
        stream.codec_context.bit_rate = 64_000
        step = 1152 * 16
        for start in range(0, both.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(both[:, start : start + step]), format="fltp", layout="stereo"
            )
            frame.sample_rate = RATE_HZ
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def preprocess_input(path: Path, minutes: int) -> Path:
    """A ``minutes``-long upload at ``path`` (an even number of minutes: meeting and pause pairs)."""
    piece = _minute_of_meeting()
    with path.open("wb") as out:
        for _ in range(max(1, minutes // 2)):
            out.write(piece)
    return path


def _sample_peak(
    child: subprocess.Popen[bytes], started: float, timeout_s: float, *, interval_s: float
) -> tuple[int, bool]:
    """Peak RSS (bytes) of ``child`` sampled until it exits; ``False`` when it was killed at ``timeout_s``."""
    process = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if time.perf_counter() - started > timeout_s:
            child.kill()
            return peak, False
        time.sleep(interval_s)
    return peak, True


def measure_preprocess(path: Path, mode: str, *, timeout_s: float = 900.0) -> PreprocessRss:
    """Preprocess ``path`` in a child process and report its memory before and during the job."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"mode must be one of {PREPROCESS_MODES}, got {mode!r}")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.rss", "preprocess", mode, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    peak, complete = _sample_peak(child, started, timeout_s, interval_s=0.02)
    out, _ = child.communicate()
    if not complete:
        raise TimeoutError(f"preprocessing {path.name} ({mode}) took over {timeout_s:g} s")
    if child.returncode != 0:
        raise RuntimeError(f"the preprocess child failed with exit status {child.returncode}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    return PreprocessRss(
        mode=mode,
        audio_s=report["audio_s"],
        base_rss_mb=report["base_rss_mb"],
        peak_rss_mb=max(peak / 2**20, report["peak_rss_mb"]),
        wall_s=time.perf_counter() - started,
    )


def _preprocess_child(mode: str, path: Path) -> dict[str, float]:
    from escriba.audio.pcm import encode_pcm
    from escriba.common.settings import load
    from escriba.preprocess.engine import Preprocessor
    from escriba.preprocess.settings import PreprocessSettings

    engine = Preprocessor(load(PreprocessSettings))
    with tempfile.TemporaryDirectory(prefix="escriba-bench-preprocess-") as tmp:
        work = Path(tmp)
        # Warm up every code path on two seconds of stereo noise: codecs, filters and first-use
        # allocations belong to the process, not to the job measured next.
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, 32000).astype(np.float32)
        warm = work / "warm.wav"
        warm.write_bytes(encode_pcm(noise, "wav"))
        engine.preprocess(warm, work / "warm.flac", work_dir=work)
        engine.preprocess(warm, work / "warm.flac", target_lufs=NORMALIZE_TARGET_LUFS, work_dir=work)
        engine.split_channels_to(warm, work, channels=2)
        base_mb = psutil.Process().memory_info().rss / 2**20
        output = work / "canonical.flac"
        if mode == "channels":
            split = engine.split_channels_to(path, work, channels=2)
            assert [c.channel for c in split] == [0, 1], split  # both channels kept: they differ
            audio_s = _duration_s(split[0].path)
        else:
            target = NORMALIZE_TARGET_LUFS if mode == "normalize" else None
            audio_s = engine.preprocess(path, output, target_lufs=target, work_dir=work).duration_s
        return {"audio_s": audio_s, "base_rss_mb": base_mb, "peak_rss_mb": _peak_mb()}


def _duration_s(path: Path) -> float:
    from escriba.audio.pcm import SAMPLE_RATE_HZ

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / SAMPLE_RATE_HZ


def _peak_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``getrusage``: on Linux its ru_maxrss survives
    fork and exec, so a child of a large benchmark process would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def _child(path: Path) -> dict[str, float]:
    from escriba.audio.pcm import decode_pcm
    from escriba.common.settings import load
    from escriba.transcription.engine import WhisperEngine
    from escriba.transcription.settings import TranscriptionSettings

    engine = WhisperEngine(load(TranscriptionSettings))
    await asyncio.to_thread(engine.load)
    model_mb = _peak_mb()
    try:
        data = await asyncio.to_thread(path.read_bytes)
        samples = await asyncio.to_thread(decode_pcm, data)
        del data
        transcript = await engine.transcribe_async(samples, engine.default_options)
    finally:
        await asyncio.to_thread(engine.close)
    return {
        "audio_s": transcript.duration_s,
        "speech_s": transcript.speech_duration_s,
        "words": float(sum(len(s.words) for s in transcript.segments)),
        "model_rss_mb": model_mb,
        "peak_rss_mb": _peak_mb(),
    }


if __name__ == "__main__":
    if sys.argv[1] == "preprocess":
        print(json.dumps(_preprocess_child(sys.argv[2], Path(sys.argv[3]))))
    else:
        print(json.dumps(asyncio.run(_child(Path(sys.argv[1])))))
