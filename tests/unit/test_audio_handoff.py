"""The in-process handoff of canonical audio from preprocess to transcription: off unless a
transcription stage switched it on, bounded in bytes and in age, each recording taken once."""

from __future__ import annotations

import pytest

from escriba.pipeline.handoff import AudioHandoff

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_until_a_transcription_stage_switches_it_on() -> None:
    handoff = AudioHandoff()
    assert not handoff.enabled
    assert handoff.offer("a" * 64, b"flac") is False
    assert handoff.held_bytes == 0
    handoff.enable(1024)
    assert handoff.offer("a" * 64, b"flac") is True
    handoff.enable(512)  # a second stage in the process never shrinks the bound
    assert handoff.max_bytes == 1024


def test_each_recording_is_taken_once() -> None:
    handoff = AudioHandoff(1024)
    handoff.offer("sha-1", b"one")
    assert handoff.take("sha-1") == b"one"
    assert handoff.take("sha-1") is None
    assert handoff.take("") is None
    assert (handoff.stats.offered, handoff.stats.taken, handoff.stats.missed) == (1, 1, 2)
    assert handoff.held_bytes == 0


def test_the_oldest_make_room_and_an_oversized_one_is_refused() -> None:
    handoff = AudioHandoff(10)
    assert handoff.offer("a", b"1234")
    assert handoff.offer("b", b"5678")
    assert handoff.offer("c", b"90ab")  # 12 bytes would not fit: "a" goes
    assert handoff.held_bytes == 8 and handoff.stats.evicted == 1
    assert handoff.take("a") is None and handoff.take("b") == b"5678"
    assert handoff.offer("d", b"x" * 11) is False  # larger than the whole bound: not kept at all
    assert handoff.take("c") == b"90ab"


def test_the_same_audio_offered_again_is_held_once() -> None:
    handoff = AudioHandoff(10)
    handoff.offer("a", b"1234")
    handoff.offer("a", b"1234")
    assert handoff.held_bytes == 4


def test_audio_nobody_takes_ages_out() -> None:
    clock = Clock()
    handoff = AudioHandoff(1024, max_age_s=60.0, clock=clock)
    handoff.offer("old", b"old")
    clock.now = 30.0
    handoff.offer("new", b"new")
    clock.now = 61.0
    assert handoff.take("old") is None  # offered 61 s ago: gone
    assert handoff.held_bytes == 3
    assert handoff.take("new") == b"new"
