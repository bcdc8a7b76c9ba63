"""Peak memory of a transcription worker on a 60-minute recording.

The parent writes 60 minutes of joined real speech as the canonical 16 kHz mono FLAC a transcription
worker fetches from the object store, then starts a child process that does what the worker does
with it (load the model as ``escriba serve transcription`` does, ``decode_pcm`` the bytes,
``WhisperEngine.transcribe_async`` with the default options) and reports its own peak resident set
(``VmHWM``). The parent samples the child's RSS with psutil as well, so a run stopped at its time
limit still reports the peak reached so far (flagged as incomplete).

Run the child alone: ``python -m bench.rss FLAC_PATH``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.audio import canonical_flac


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
        peak = 0
        process = psutil.Process(child.pid)
        complete = True
        while child.poll() is None:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if time.perf_counter() - started > timeout_s:
                child.kill()
                complete = False
                break
            time.sleep(0.25)
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
    print(json.dumps(asyncio.run(_child(Path(sys.argv[1])))))
