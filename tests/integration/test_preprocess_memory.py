"""Preprocess memory does not grow with the recording's length (issue 15, class 2).

It held about 1 GiB per hour of audio (the decoded samples, their copies, the encoded bytes), so a
4-hour meeting or a small file of long silence took its pod down. Each case preprocesses a 10- and a
60-minute upload (real speech, 44.1 kHz stereo with different channels, and as long again of silence)
in a child process that psutil samples, and checks that the hour costs no more than the ten minutes
plus a small margin, and that both stay within the bound the chart's limits are computed from
(:func:`escriba.preprocess.engine.job_memory_bound`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rss
from escriba.preprocess.engine import job_memory_bound

pytestmark = pytest.mark.timeout(600)

#: What an hour may cost over ten minutes: the loudness meters' hop energies (80 bytes a second)
#: and allocator noise; the old code needed about 800 MiB more.
FLAT_MARGIN_MB = 16.0
MIB = 2**20


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("long-uploads")
    return {minutes: rss.preprocess_input(folder / f"{minutes}min.mp3", minutes) for minutes in (10, 60)}


@pytest.mark.parametrize("mode", rss.PREPROCESS_MODES)
def test_preprocess_memory_is_flat_in_duration(uploads: dict[int, Path], mode: str) -> None:
    short = rss.measure_preprocess(uploads[10], mode)
    long = rss.measure_preprocess(uploads[60], mode)
    assert short.audio_s == pytest.approx(600, abs=5) and long.audio_s == pytest.approx(3600, abs=5)
    assert long.peak_rss_mb < short.peak_rss_mb + FLAT_MARGIN_MB, (short, long)
    for run in (short, long):
        assert run.growth_mb * MIB <= job_memory_bound(run.audio_s), run
