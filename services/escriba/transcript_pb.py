"""The transcript's dataclasses to and from their protobuf messages.

Engines speak :mod:`escriba.transcript`; gRPC and NATS speak ``escriba.v1``. The mapping sits beside
the types it maps, so a new field is added next to its dataclass for every transport; the option
messages are converted by the package that owns the options.
"""

from __future__ import annotations

from collections.abc import Iterable

from escriba.common.errors import InvalidInputError
from escriba.transcript import Edit, GlossaryEntry, Segment, Transcript, Word
from escriba.v1 import common_pb2, transcription_pb2


def word_to_pb(w: Word) -> common_pb2.Word:
    return common_pb2.Word(start_s=w.start_s, end_s=w.end_s, word=w.word, probability=w.probability)


def word_from_pb(w: common_pb2.Word) -> Word:
    return Word(start_s=w.start_s, end_s=w.end_s, word=w.word, probability=w.probability)


def segment_to_pb(s: Segment) -> common_pb2.Segment:
    return common_pb2.Segment(
        id=s.id,
        start_s=s.start_s,
        end_s=s.end_s,
        text=s.text,
        words=[word_to_pb(w) for w in s.words],
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
        compression_ratio=s.compression_ratio,
        temperature=s.temperature,
        channel=s.channel,
        speaker=s.speaker,
    )


#: Edits name their segment with an int32 (-1: the full text), so a segment id must fit in one.
MAX_SEGMENT_ID = 2**31 - 1


def segment_from_pb(s: common_pb2.Segment) -> Segment:
    if s.id > MAX_SEGMENT_ID:
        raise InvalidInputError(
            f"segment id {s.id} is out of range (at most {MAX_SEGMENT_ID})", reason="invalid_segment"
        )
    return Segment(
        id=s.id,
        start_s=s.start_s,
        end_s=s.end_s,
        text=s.text,
        words=tuple(word_from_pb(w) for w in s.words),
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
        compression_ratio=s.compression_ratio,
        temperature=s.temperature,
        channel=s.channel if s.HasField("channel") else None,
        speaker=s.speaker,
    )


def segments_from_pb(segments: Iterable[common_pb2.Segment]) -> tuple[Segment, ...]:
    return tuple(segment_from_pb(s) for s in segments)


def transcript_to_pb(t: Transcript) -> transcription_pb2.Transcript:
    return transcription_pb2.Transcript(
        text=t.text,
        segments=[segment_to_pb(s) for s in t.segments],
        language=t.language,
        language_probability=t.language_probability,
        duration_s=t.duration_s,
        speech_duration_s=t.speech_duration_s,
        model=t.model,
        batch_size=t.batch_size,
        inference_ms=t.inference_ms,
    )


def transcript_from_pb(t: transcription_pb2.Transcript) -> Transcript:
    return Transcript(
        text=t.text,
        segments=segments_from_pb(t.segments),
        language=t.language,
        language_probability=t.language_probability,
        duration_s=t.duration_s,
        speech_duration_s=t.speech_duration_s,
        model=t.model,
        batch_size=t.batch_size,
        inference_ms=t.inference_ms,
    )


def edit_to_pb(e: Edit) -> common_pb2.Edit:
    return common_pb2.Edit(
        rule=e.rule,
        original=e.original,
        replacement=e.replacement,
        segment_id=e.segment_id,
        offset=e.offset,
    )


def edit_from_pb(e: common_pb2.Edit) -> Edit:
    return Edit(
        rule=e.rule, original=e.original, replacement=e.replacement, segment_id=e.segment_id, offset=e.offset
    )


def glossary_from_pb(entries: Iterable[common_pb2.GlossaryEntry]) -> tuple[GlossaryEntry, ...]:
    return tuple(GlossaryEntry(term=e.term, aliases=tuple(e.aliases)) for e in entries)
