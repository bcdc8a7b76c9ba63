"""Domain types of a transcript, shared by the transcription, correction and gateway code.

Plain frozen dataclasses so the engines stay free of protobuf and gRPC; the transports convert
(``escriba.transcript_pb``).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    #: The input channel it was said on (per-channel transcription), and that channel's label.
    channel: int | None = None
    speaker: str = ""

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


def joined_text(segments: Sequence[Segment]) -> str:
    """The text of ``segments``: one line of words; or, when they carry speakers, one line per turn
    (consecutive segments of one speaker), each led by its speaker's label."""
    if not any(s.speaker for s in segments):
        return " ".join(s.text.strip() for s in segments if s.text.strip())
    turns: list[tuple[str, list[str]]] = []
    for segment in segments:
        text = segment.text.strip()
        if not text:
            continue
        if turns and turns[-1][0] == segment.speaker:
            turns[-1][1].append(text)
        else:
            turns.append((segment.speaker, [text]))
    return "\n".join(
        f"{speaker}: {' '.join(words)}" if speaker else " ".join(words) for speaker, words in turns
    )


def speaker_label(channel: int) -> str:
    """How a channel is named in text and subtitles: ``Speaker 1`` for the first (left) channel."""
    return f"Speaker {channel + 1}"


def merge_channels(transcripts: Sequence[tuple[int, Transcript]]) -> Transcript:
    """One transcript of several channels' transcripts: their segments in time order (each carrying
    its channel and speaker label, renumbered), the text one line per speaker turn. The language is
    the one most of the speech was in."""
    labelled = [
        replace(segment, channel=channel, speaker=speaker_label(channel))
        for channel, transcript in transcripts
        for segment in transcript.segments
    ]
    labelled.sort(key=lambda s: (s.start_s, s.channel or 0))
    segments = tuple(replace(s, id=index) for index, s in enumerate(labelled))
    main = max((t for _, t in transcripts), key=lambda t: t.speech_duration_s or t.duration_s)
    return Transcript(
        text=joined_text(segments),
        segments=segments,
        language=main.language,
        language_probability=main.language_probability,
        duration_s=max(t.duration_s for _, t in transcripts),
        speech_duration_s=sum(t.speech_duration_s for _, t in transcripts),
        model=main.model,
        batch_size=max(t.batch_size for _, t in transcripts),
        inference_ms=sum(t.inference_ms for _, t in transcripts),
        windows_redecoded=sum(t.windows_redecoded for _, t in transcripts),
    )
