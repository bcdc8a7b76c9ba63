"""RULES_VERSION keys the correction cache: pin the rules' behaviour to it.

If this fails, a rule's output changed. That is fine when intended: bump ``RULES_VERSION`` in
``escriba/correction/rules.py`` (so caches stop serving the old results) and record the new digest here.
Spelling is left out: its dictionary's version is part of the cache key on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from escriba.correction import RULES_VERSION, CorrectionOptions, Corrector
from escriba.transcript import GlossaryEntry, Segment, Word

PINNED = {
    "escriba-correction-2": "f84affc9b4ef52626dd6aefeed435be48977532713dc2fd6878d53d1968174ba",
    "escriba-correction-3": "e9d7c530b228c3bf89a6764f22505d6e9bf8eb585bd2f9c9f49e7b9946d64ae8",
}

_GLOSSARY = (
    GlossaryEntry("ComfyUI", ("comfy ui", "comfy you eye")),
    GlossaryEntry("Kubernetes", ("cooper netties",)),
    GlossaryEntry("iPhone"),
)
_TEXTS = [
    "  so comfy ui   is great , really.   i agree agree agree agree agree ",
    "we use .NET, 1,000 times at 10:30 in the U.S. ok? iphone sales.fine end.The next",
    "ha ha ha ha ha ha ha. thank you thank you thank you thank you so much",
    "Bonjour , monde ! vraiment ?",
]
_SEGMENTS = [
    Segment(0, 0.0, 2.0, " and so my fellow Americans,", (Word(0.0, 0.5, " and", 0.9),), -0.2, 0.01),
    Segment(1, 2.0, 4.0, " ask not what your country can do for you,", (), -0.2, 0.01),
    Segment(2, 4.0, 6.0, " ask what you can do for your country.", (), -0.2, 0.01),
    Segment(3, 6.0, 8.0, " ask what you can do for your country.", (), -0.2, 0.01),
    Segment(4, 8.0, 9.0, " Thank you.", (), -0.3, 0.05),
    Segment(5, 9.0, 10.0, " No.", (), -0.3, 0.05),
    Segment(6, 10.0, 11.0, " No.", (), -0.3, 0.05),
    Segment(7, 11.0, 12.0, " we run cooper netties   on comfy you eye,i think", (), -0.3, 0.05),
    Segment(8, 12.0, 30.0, " Thanks for watching!", (), -0.4, 0.45),
    Segment(9, 30.0, 31.0, " Subtitles by the Amara.org community", (), -1.2, 0.1),
    Segment(10, 31.0, 34.0, " some more word, word, word, word, word.", (), -0.3, 0.05, 1.6),
    Segment(11, 34.0, 37.0, " it works works works works works.", (), -0.3, 0.05, 2.7),
]


def _digest() -> str:
    corrector = Corrector()
    outputs = []
    for options in (
        CorrectionOptions(glossary=_GLOSSARY),
        CorrectionOptions(glossary=_GLOSSARY, language="fr"),
        CorrectionOptions(remove_hallucinations=False, fix_casing=False),
    ):
        for text in _TEXTS:
            outputs.append(dataclasses.asdict(corrector.correct(text, (), options)))
        outputs.append(dataclasses.asdict(corrector.correct("", _SEGMENTS, options)))
    encoded = json.dumps(outputs, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def test_rules_version_pins_behaviour() -> None:
    assert RULES_VERSION in PINNED, f"record the digest of the new rules version {RULES_VERSION!r}"
    assert _digest() == PINNED[RULES_VERSION], (
        "the correction rules' output changed: bump RULES_VERSION and record the new digest"
    )
