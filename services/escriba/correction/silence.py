"""Whole-segment failure modes: stock phrases said over silence, and duplicated segments.

Whisper was trained on subtitles, so over silence, music or noise it tends to "hear" what subtitlers
wrote there: "Thank you.", "Thanks for watching!", "Subtitles by the Amara.org community", a lone "you".
People say these too, so a stock phrase is removed only when the segment also *looks* like silence:

* ``no_speech_prob >= 0.6`` (Whisper's own no-speech threshold), or
* ``avg_logprob <= -1.0`` (Whisper's own log-probability threshold: the decoder was guessing), or
* it is trailing (only stock phrases follow it, the classic place: silence after the last words) and the
  evidence is half as strong: ``no_speech_prob >= 0.3`` or ``avg_logprob <= -0.7``.

A segment's text is a stock phrase when every sentence in it is one (after dropping case and
punctuation), or it names a subtitle credit (Amara.org), or it holds punctuation only. A segment without
these scores (plain text from a caller: both 0.0) is never removed: there is no evidence against it.

A segment whose text repeats the previous kept segment's (same words, ignoring case and punctuation) is
a decoding loop when it has at least 3 words; a shorter repeat ("No." "No.") is ordinary speech unless
the segment also looks like silence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from escriba.correction.tokens import phrase_key
from escriba.transcript import LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD, Segment

HALLUCINATION = "hallucination"
DUPLICATE = "duplicate"

NO_SPEECH_PROB_SILENT = NO_SPEECH_THRESHOLD
AVG_LOGPROB_GUESSING = LOG_PROB_THRESHOLD
TRAILING_NO_SPEECH_PROB = 0.3
TRAILING_AVG_LOGPROB = -0.7
DUPLICATE_MIN_WORDS = 3

_STOCK = (
    # English
    "you",
    "thank you",
    "thank you very much",
    "thank you so much",
    "thanks",
    "thanks for watching",
    "thank you for watching",
    "thanks for listening",
    "thank you for listening",
    "thanks for watching and see you next time",
    "please subscribe",
    "please subscribe to my channel",
    "subscribe to my channel",
    "like and subscribe",
    "please like and subscribe",
    "don't forget to like and subscribe",
    "see you next time",
    "see you in the next video",
    "bye",
    "bye bye",
    "goodbye",
    "the end",
    "transcription by castingwords",
    # Other languages Whisper hallucinates in, even on English audio
    "merci",
    "merci d'avoir regardé",
    "sous-titrage st' 501",
    "gracias",
    "gracias por ver",
    "gracias por ver el video",
    "suscríbete",
    "danke",
    "vielen dank",
    "danke fürs zuschauen",
    "untertitel im auftrag des zdf für funk 2017",
    "grazie",
    "grazie per la visione",
    "obrigado",
    "obrigada",
    "bedankt voor het kijken",
    "спасибо",
    "спасибо за просмотр",
    "продолжение следует",
    "ご視聴ありがとうございました",
    "谢谢观看",
    "시청해주셔서 감사합니다",
)
STOCK_PHRASES = frozenset(phrase_key(p) for p in _STOCK)
_CREDITS = ("amara org",)
_SENTENCES = re.compile(r"(?<=[.!?])\s+")


def _punctuation_only(text: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in text)


def is_stock_phrase(text: str) -> bool:
    if not text.strip():
        return False
    if _punctuation_only(text):
        return True
    key = phrase_key(text)
    if any(credit in key for credit in _CREDITS):
        return True
    sentences = [phrase_key(s) for s in _SENTENCES.split(text.strip())]
    return all(s in STOCK_PHRASES for s in sentences if s) and any(sentences)


def looks_silent(segment: Segment, *, trailing: bool) -> bool:
    if segment.no_speech_prob >= NO_SPEECH_PROB_SILENT or segment.avg_logprob <= AVG_LOGPROB_GUESSING:
        return True
    return trailing and (
        segment.no_speech_prob >= TRAILING_NO_SPEECH_PROB or segment.avg_logprob <= TRAILING_AVG_LOGPROB
    )


def segment_verdicts(segments: Sequence[Segment]) -> list[str | None]:
    """For each segment, the rule that drops it (:data:`HALLUCINATION`, :data:`DUPLICATE`) or None."""
    stock = [is_stock_phrase(s.text) for s in segments]
    trailing = [False] * len(segments)
    only_stock_after = True
    for index in range(len(segments) - 1, -1, -1):
        trailing[index] = only_stock_after
        only_stock_after = only_stock_after and (stock[index] or not segments[index].text.strip())

    verdicts: list[str | None] = []
    previous_key = ""
    for index, segment in enumerate(segments):
        key = phrase_key(segment.text)
        silent = looks_silent(segment, trailing=trailing[index])
        if stock[index] and silent:
            verdicts.append(HALLUCINATION)
        elif key and key == previous_key and (len(key.split()) >= DUPLICATE_MIN_WORDS or silent):
            verdicts.append(DUPLICATE)
        else:
            verdicts.append(None)
            if key:
                previous_key = key
    return verdicts
