"""Spacing and punctuation: the conservative subset that never changes meaning.

* runs of whitespace become one space; leading and trailing whitespace goes;
* no space before ``, . ! ? ; :`` when the punctuation closes a word (followed by a space, the end, a
  quote or a bracket), so ``.NET`` or ``.5`` keep their space; French keeps its space before
  ``! ? ; :`` (its typography wants one);
* one space after ``,`` or ``;`` squeezed between two letters (``yes,sir``) and after ``. ! ?`` squeezed
  between a lower-case word and a capitalised one (``end.The``); digits (``1,000``, ``3.5``, ``10:30``),
  abbreviations (``U.S.``) and addresses (``example.com``) never match;
* repeated commas become one.

Anything less certain (quotes, apostrophes split by the model, ellipses) is left as the model wrote it.
"""

from __future__ import annotations

import re

from escriba.correction.edits import Change

RULE = "spacing"

_CLOSERS = "\"')]}\u00bb\u201d\u2019"
_PUNCT_RUN = re.compile(r"[,.!?;:]+")


def _pattern(space_before_punct: str) -> re.Pattern[str]:
    glue = "[,;]" if ";" not in space_before_punct else "[,]"
    return re.compile(
        rf"(?P<wsp>(?<=\S)\s+(?P<p>{glue})(?=[^\W\d_]))"  # "yes ,sir" -> "yes, sir"
        r"|(?P<ws>\s+)"
        r"|(?P<commas>,{2,})"
        r"|(?<=[^\W\d_])(?P<tight>[,;])(?=[^\W\d_])"
        r"|(?<=[a-z]{2})(?P<stop>[.!?])(?=[A-Z][a-z])"
    )


# Languages whose typography puts a space before these marks.
_SPACE_BEFORE = {"fr": "!?;:"}
_PATTERNS = {lang: _pattern(marks) for lang, marks in _SPACE_BEFORE.items()}
_DEFAULT_PATTERN = _pattern("")


def _space_replacement(text: str, start: int, end: int, no_space_before: str) -> str:
    if start == 0 or end == len(text):
        return ""
    if text[end] in no_space_before:
        run = _PUNCT_RUN.match(text, end)
        after = run.end() if run else end
        if after == len(text) or text[after].isspace() or text[after] in _CLOSERS:
            return ""
    return " "


def spacing_changes(text: str, language: str) -> list[Change]:
    base = language.split("-", 1)[0]
    pattern = _PATTERNS.get(base, _DEFAULT_PATTERN)
    no_space_before = "".join(ch for ch in ",.!?;:" if ch not in _SPACE_BEFORE.get(base, ""))
    changes: list[Change] = []
    for m in pattern.finditer(text):
        start, end = m.span()
        if m.group("wsp") is not None:
            replacement = m.group("p") + " "
        elif m.group("ws") is not None:
            replacement = _space_replacement(text, start, end, no_space_before)
        elif m.group("commas") is not None:
            replacement = ", " if end < len(text) and text[end].isalpha() else ","
        else:
            replacement = m.group() + " "
        if replacement != m.group():
            changes.append(Change(start, end, replacement))
    return changes
