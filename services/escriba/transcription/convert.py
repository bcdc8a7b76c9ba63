"""A request's transcription options from their protobuf message, over the server's defaults."""

from __future__ import annotations

from typing import Any

from escriba.transcription.options import TranscriptionOptions
from escriba.v1 import common_pb2


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
        task=o.task or None,
        channels=o.channels or None,
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
