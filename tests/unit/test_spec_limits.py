"""What a TaskSpec may carry, checked at the gateway so that no stage meets it."""

from __future__ import annotations

import pytest

from escriba.common.errors import InvalidInputError
from escriba.gateway.uploads import MAX_MODEL_NAME_CHARS, validate_spec
from escriba.v1 import common_pb2, tasks_pb2

pytestmark = pytest.mark.timeout(30)


def test_a_plain_spec_passes() -> None:
    spec = tasks_pb2.TaskSpec(filename="a.wav", output_formats=[tasks_pb2.OUTPUT_FORMAT_SRT])
    assert validate_spec(spec).filename == "a.wav"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (tasks_pb2.TaskSpec(idempotency_key="k\x00"), "idempotency_key contains a NUL"),
        (
            tasks_pb2.TaskSpec(transcription=common_pb2.TranscriptionOptions(hotwords="x\x00y")),
            "transcription.hotwords contains a NUL",
        ),
        (
            tasks_pb2.TaskSpec(
                correction=common_pb2.CorrectionOptions(
                    glossary=[common_pb2.GlossaryEntry(term="ok", aliases=["fine", "b\x00d"])]
                )
            ),
            "correction.glossary[0].aliases[1] contains a NUL",
        ),
        (tasks_pb2.TaskSpec(output_formats=[tasks_pb2.OUTPUT_FORMAT_SRT] * 50), "50 output formats"),
        (
            tasks_pb2.TaskSpec(
                transcription=common_pb2.TranscriptionOptions(model="m" * (MAX_MODEL_NAME_CHARS + 1))
            ),
            "model name",
        ),
        (
            tasks_pb2.TaskSpec(transcription=common_pb2.TranscriptionOptions(model="tiny\nen")),
            "model name",
        ),
    ],
)
def test_what_no_stage_should_meet_is_refused(spec: tasks_pb2.TaskSpec, says: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_spec(spec)
    assert says in caught.value.message
