"""Keep word timestamps in step with a corrected segment text.

Subtitles and word-level highlighting read ``Segment.words``, so after a correction they must say what
the text says. Old and new words are aligned by their keys (difflib, deterministic): unchanged words keep
their timing and probability and take the corrected spelling; a run of words replaced by another run
(glossary "comfy you eye" -> "ComfyUI") shares the old run's time span evenly, with the lowest
probability of the run; removed words go; an inserted word gets an instant at its neighbour's edge.
When a repetition loop collapses, the word that stays takes the timing of the loop's first copy (the
alignment matches earliest), which is the one actually spoken; the rest was the decoder looping.
"""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

from escriba.correction.tokens import word_key
from escriba.transcript import Word


def realign_words(words: Sequence[Word], text: str) -> tuple[Word, ...]:
    """Words for ``text`` (single-spaced) timed from ``words``; each keeps Whisper's leading space."""
    if not words:
        return ()
    new = text.split()
    matcher = SequenceMatcher(
        None, [word_key(w.word.strip()) for w in words], [word_key(t) for t in new], autojunk=False
    )
    out: list[Word] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            out.extend(
                Word(w.start_s, w.end_s, " " + t, w.probability)
                for w, t in zip(words[i1:i2], new[j1:j2], strict=True)
            )
        elif op == "replace":
            start, end = words[i1].start_s, words[i2 - 1].end_s
            probability = min(w.probability for w in words[i1:i2])
            count = j2 - j1
            step = (end - start) / count
            for k, t in enumerate(new[j1:j2]):
                stop = end if k == count - 1 else start + (k + 1) * step
                out.append(Word(start + k * step, stop, " " + t, probability))
        elif op == "insert":
            instant = words[i1 - 1].end_s if i1 > 0 else words[0].start_s
            out.extend(Word(instant, instant, " " + t, 0.0) for t in new[j1:j2])
    return tuple(out)
