"""Preprocessing's report and encodings to and from their protobuf messages."""

from __future__ import annotations

from escriba.common.errors import InvalidInputError
from escriba.preprocess.engine import PreprocessInfo
from escriba.v1 import common_pb2

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
