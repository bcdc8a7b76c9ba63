"""Preprocess memory does not grow with the recording's length (issue 15, class 2).

It held about 1 GiB per hour of audio (the decoded samples, their copies, the encoded bytes), so a
4-hour meeting or a small file of long silence took its pod down. Each case preprocesses a 6- and a
30-minute upload (real speech, 44.1 kHz stereo with different channels, and as long again of silence)
in a child process that psutil samples, and checks that the half hour costs no more than the six
minutes plus a small margin (the bench measures 10, 60 and 240 minutes), and that both stay within
the bound the chart's limits are computed from (:func:`escriba.preprocess.engine.job_memory_bound`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import rss
from escriba.preprocess.engine import job_memory_bound

pytestmark = pytest.mark.timeout(600)

#: What half an hour may cost over six minutes: the loudness meters' hop energies (80 bytes a
#: second) and allocator noise; the old code needed about 400 MiB more (about 16 MiB a minute).
FLAT_MARGIN_MB = 16.0
MIB = 2**20


@pytest.fixture(scope="module")
def uploads(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("long-uploads")
    return {minutes: rss.preprocess_input(folder / f"{minutes}min.mp3", minutes) for minutes in (6, 30)}


@pytest.mark.parametrize("mode", rss.PREPROCESS_MODES)
def test_preprocess_memory_is_flat_in_duration(uploads: dict[int, Path], mode: str) -> None:
    short = rss.measure_preprocess(uploads[6], mode)
    long = rss.measure_preprocess(uploads[30], mode)
    assert short.audio_s == pytest.approx(360, abs=5) and long.audio_s == pytest.approx(1800, abs=5)
    assert long.peak_rss_mb < short.peak_rss_mb + FLAT_MARGIN_MB, (short, long)
    for run in (short, long):
        assert run.growth_mb * MIB <= job_memory_bound(run.audio_s), run
