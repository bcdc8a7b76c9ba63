"""Every JetStream name comes from one prefix; the default prefix gives the documented contract."""

from __future__ import annotations

import pytest

from escriba.bus import BusNames, Stage


def test_default_prefix_gives_the_documented_names() -> None:
    names = BusNames()
    assert names.job_subject(Stage.PREPROCESS) == "escriba.jobs.preprocess"
    assert names.job_subject(Stage.TRANSCRIPTION) == "escriba.jobs.transcribe"
    assert names.job_subject(Stage.CORRECTION) == "escriba.jobs.correct"
    assert names.event_subject("0f8c-42") == "escriba.events.task.0f8c-42"
    assert names.events_wildcard == "escriba.events.>"
    assert names.jobs_stream == "ESCRIBA_JOBS"
    assert names.events_stream == "ESCRIBA_EVENTS"
    assert [names.consumer(s) for s in Stage] == ["preprocess", "transcription", "correction"]
    assert names.audio_bucket == "escriba-audio"
    assert names.normalized_bucket == "escriba-normalized"
    assert names.transcripts_bucket == "escriba-transcripts"
    assert names.corrections_bucket == "escriba-corrections"


def test_a_test_prefix_renames_everything() -> None:
    names = BusNames("t1a2")
    assert names.job_subjects == (
        "t1a2.jobs.preprocess",
        "t1a2.jobs.transcribe",
        "t1a2.jobs.correct",
        "t1a2.jobs.transcribe.*",  # every other model's own transcription subject
    )
    assert names.jobs_stream == "T1A2_JOBS"
    assert names.events_stream == "T1A2_EVENTS"
    assert names.audio_bucket == "t1a2-audio"
    assert names.event_subject("abc") == "t1a2.events.task.abc"
    # Consumers are scoped by their stream, so they keep their plain names.
    assert names.consumer(Stage.TRANSCRIPTION) == "transcription"
    assert names.consumer(Stage.TRANSCRIPTION, "base") == "transcription-base"
    assert names.job_subject(Stage.TRANSCRIPTION, "base") == "t1a2.jobs.transcribe.base"


@pytest.mark.parametrize("prefix", ["", "Escriba", "1abc", "a.b", "a b", "a*", "x" * 33])
def test_prefixes_that_cannot_name_subjects_or_buckets_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        BusNames(prefix)


@pytest.mark.parametrize("task_id", ["", "a.b", "a*", "a>", "a b"])
def test_task_ids_that_would_change_the_subject_are_refused(task_id: str) -> None:
    with pytest.raises(ValueError):
        BusNames().event_subject(task_id)
