"""``cli_many_files_vs_plain_ratio``: 30 short real recordings through ``escriba transcribe`` (a new
process, the way a user runs it, files in flight together) against a plain faster-whisper loop over
the same files, with the WER of both sides against the human transcripts.

The 30 files are the corpus recordings of at most 25 s (25 of them), ``jfk.flac``, and MP3
re-encodings of four of those: new bytes, so no cache serves them, and their transcripts are scored
like any other file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import audio, wer
from bench.transcription import PlainWhisper, corpus_wer

#: The human transcript of tests/data/jfk.flac (as tests/support/text.py has it).
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)

FILES = 30
SHORT_S = 25.0


def short_files(folder: Path) -> list[tuple[Path, float, str]]:
    """``FILES`` short real recordings with their reference transcripts."""
    chosen = [(r.path, r.duration_s, r.reference) for r in wer.corpus() if r.duration_s <= SHORT_S]
    chosen.append((audio.DATA_DIR / "jfk.flac", 11.0, JFK_REFERENCE))
    for index, (path, seconds, reference) in enumerate(list(chosen[: FILES - len(chosen)])):
        copy = folder / f"copy-{index}-{path.stem}.mp3"
        copy.write_bytes(audio.encode_mp3(audio._decode(path, audio.RATE_HZ, "mono"), bit_rate=96_000))
        chosen.append((copy, seconds, reference))
    return chosen[:FILES]


@dataclass(frozen=True, slots=True)
class CliComparison:
    files: int
    audio_s: float
    plain_s: float
    cli_s: float
    jobs: int
    plain_wer: float
    cli_wer: float
    cli_failures: int

    @property
    def ratio(self) -> float:
        return self.plain_s / self.cli_s


async def compare(
    address: str, plain: PlainWhisper, files: list[tuple[Path, float, str]], *, jobs: int = 8
) -> CliComparison:
    """The plain loop first, then the CLI, each on every file once (both warm: model loaded, the
    pipeline's stages started)."""
    started = time.perf_counter()
    plain_texts = [await asyncio.to_thread(plain.transcribe, str(p), s) for p, s, _ in files]
    plain_s = time.perf_counter() - started

    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCRIBA_")}
    command = [
        sys.executable,
        "-m",
        "escriba.cli",
        "transcribe",
        *(str(p) for p, _, _ in files),
        "--server",
        address,
        "--format",
        "json",
        "--jobs",
        str(jobs),
        "--quiet",
    ]
    started = time.perf_counter()
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=1800
    )
    cli_s = time.perf_counter() - started
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    if len(lines) != len(files):
        raise RuntimeError(
            f"the CLI printed {len(lines)} results for {len(files)} files: {result.stderr[-2000:]}"
        )
    cli_texts = [line["text"] if line["status"] == "completed" else "" for line in lines]
    references = [reference for _, _, reference in files]
    return CliComparison(
        files=len(files),
        audio_s=sum(seconds for _, seconds, _ in files),
        plain_s=plain_s,
        cli_s=cli_s,
        jobs=jobs,
        plain_wer=corpus_wer(references, plain_texts),
        cli_wer=corpus_wer(references, cli_texts),
        cli_failures=sum(1 for line in lines if line["status"] != "completed"),
    )
