"""Word error rate after the normalization the acceptance criteria use."""

from __future__ import annotations

import re

import jiwer

JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
STEREO_LEFT = (
    "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
)
STEREO_RIGHT = "The horizon seems extremely distant."


def normalize(text: str) -> str:
    text = text.lower()
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))
