"""Conversions between the domain dataclasses and their protobuf messages.

Engines speak :mod:`escriba.transcript`; gRPC and NATS speak ``escriba.v1``. Keeping the mapping in one
module means a new field is added in one place for every transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from escriba.common.errors import InvalidInputError
from escriba.correction.options import CorrectionOptions
from escriba.preprocess.engine import PreprocessInfo
from escriba.transcript import Edit, GlossaryEntry, Segment, Transcript, Word
from escriba.transcription.options import TranscriptionOptions
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


def glossary_to_pb(entries: Iterable[GlossaryEntry]) -> list[common_pb2.GlossaryEntry]:
    return [common_pb2.GlossaryEntry(term=e.term, aliases=list(e.aliases)) for e in entries]


def correction_options_from_pb(o: common_pb2.CorrectionOptions) -> CorrectionOptions:
    return CorrectionOptions(
        glossary=glossary_from_pb(o.glossary),
        spelling=o.spelling if o.HasField("spelling") else None,
        remove_hallucinations=o.remove_hallucinations if o.HasField("remove_hallucinations") else True,
        fix_casing=o.fix_casing if o.HasField("fix_casing") else True,
        language=o.language,
    )


_ENCODINGS = {"flac": common_pb2.AUDIO_ENCODING_FLAC, "wav": common_pb2.AUDIO_ENCODING_WAV}


def encoding_to_pb(encoding: str) -> common_pb2.AudioEncoding.ValueType:
    return _ENCODINGS.get(encoding, common_pb2.AUDIO_ENCODING_UNSPECIFIED)


def encoding_from_pb(value: int) -> str | None:
    """``None`` for UNSPECIFIED (the server default); unknown values raise InvalidInputError."""
    if value == common_pb2.AUDIO_ENCODING_UNSPECIFIED:
        return None
    for name, number in _ENCODINGS.items():
        if number == value:
            return name
    raise InvalidInputError(f"unknown audio encoding {value}", reason="invalid_option")


def audio_info_to_pb(info: PreprocessInfo) -> common_pb2.AudioInfo:
    return common_pb2.AudioInfo(
        sha256=info.sha256,
        duration_s=info.duration_s,
        source_sample_rate_hz=info.source_sample_rate_hz,
        source_channels=info.source_channels,
        source_container=info.source_container,
        source_codec=info.source_codec,
        source_bytes=info.source_bytes,
        input_loudness_lufs=info.input_loudness_lufs,
        output_loudness_lufs=info.output_loudness_lufs,
        gain_db=info.gain_db,
        sample_rate_hz=info.sample_rate_hz,
        encoding=encoding_to_pb(info.encoding),
        normalized_sha256=info.normalized_sha256,
    )


def transcription_options_from_pb(
    o: common_pb2.TranscriptionOptions, defaults: TranscriptionOptions
) -> TranscriptionOptions:
    """Apply the request's set fields over the server's defaults (validation happens on construction)."""

    def opt(name: str) -> Any:
        return getattr(o, name) if o.HasField(name) else None  # type: ignore[arg-type]

    options = defaults.with_changes(
        language=o.language or None,
        beam_size=opt("beam_size"),
        word_timestamps=opt("word_timestamps"),
        initial_prompt=o.initial_prompt or None,
        hotwords=o.hotwords or None,
        temperature=opt("temperature"),
        temperature_fallback=opt("temperature_fallback"),
        condition_on_previous_text=opt("condition_on_previous_text"),
    )
    if o.HasField("vad"):
        vad = o.vad

        def vad_opt(name: str) -> Any:
            return getattr(vad, name) if vad.HasField(name) else None  # type: ignore[arg-type]

        options = options.with_vad_changes(
            enabled=vad_opt("enabled"),
            threshold=vad_opt("threshold"),
            min_speech_duration_ms=vad_opt("min_speech_duration_ms"),
            min_silence_duration_ms=vad_opt("min_silence_duration_ms"),
            speech_pad_ms=vad_opt("speech_pad_ms"),
            max_speech_duration_s=vad_opt("max_speech_duration_s"),
        )
    return options
