"""Domain types of a transcript, shared by the transcription, correction and gateway code.

Plain frozen dataclasses so the engines stay free of protobuf and gRPC; the transports convert
(``escriba.transcript_pb``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

#: Whisper's own quality thresholds (openai/whisper and faster-whisper defaults): text whose gzip
#: compression ratio is above the first is repetitive (a decoding loop), an average log-probability
#: under the second means the decoder was guessing, and a no-speech probability over the third (with a
#: low log-probability) means silence. The decoder's fallback and the correction rules read the same.
COMPRESSION_RATIO_THRESHOLD: Final = 2.4
LOG_PROB_THRESHOLD: Final = -1.0
NO_SPEECH_THRESHOLD: Final = 0.6


@dataclass(frozen=True, slots=True)
class Word:
    start_s: float
    end_s: float
    word: str  # as Whisper emits it, usually with a leading space
    probability: float = 0.0


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0

    def with_text(self, text: str) -> Segment:
        return replace(self, text=text)

    def with_words(self, words: tuple[Word, ...]) -> Segment:
        return replace(self, words=words)


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    segments: tuple[Segment, ...]
    language: str
    language_probability: float
    duration_s: float
    speech_duration_s: float = 0.0
    model: str = ""
    batch_size: int = 0
    inference_ms: float = 0.0
    #: Windows decoded again: at a higher temperature (fallback), or the speech after a window's last
    #: word (the decoder stopped early). Not part of the stored transcript; for metrics and logs.
    windows_redecoded: int = 0


@dataclass(frozen=True, slots=True)
class Edit:
    """One change made by a correction rule, for auditing."""

    rule: str
    original: str
    replacement: str
    segment_id: int = -1  # -1: full text only
    offset: int = 0  # character offset of ``original`` in the text the rule saw


@dataclass(frozen=True, slots=True)
class GlossaryEntry:
    term: str
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Progress:
    """How far one transcription is: ``done_s`` of the recording's ``total_s`` decoded, and the
    segments finished so far (a preview: the final transcript's segments may be cut differently)."""

    done_s: float
    total_s: float
    segments: tuple[Segment, ...] = ()
