"""The per-request glossary: whole-word, case-insensitive, multi-word, longest match first."""

from __future__ import annotations

import random
import string
import tracemalloc

import pytest

from escriba.correction.edits import apply_changes
from escriba.correction.errors import (
    EmptyGlossaryPhraseError,
    GlossaryConflictError,
    GlossaryError,
    GlossaryPhraseTooLongError,
    GlossaryTooLargeError,
)
from escriba.correction.glossary import GlossaryLimits, compile_glossary, normalize_entries
from escriba.correction.settings import CorrectionSettings
from escriba.transcript import GlossaryEntry

LIMITS = GlossaryLimits(max_entries=10, max_aliases=5, max_phrase_chars=40, max_total_chars=1_000)

ENTRIES = (
    GlossaryEntry("ComfyUI", ("comfy ui", "comfy you eye", "comfy")),
    GlossaryEntry("Kubernetes", ("cooper netties", "kuber nettis")),
    GlossaryEntry("C++", ("see plus plus",)),
    GlossaryEntry("New York City", ("new york",)),
)


def _apply(text: str, entries: tuple[GlossaryEntry, ...] = ENTRIES) -> str:
    glossary = compile_glossary(normalize_entries(entries, LIMITS))
    return apply_changes(text, glossary.changes(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I use comfy ui daily", "I use ComfyUI daily"),
        ("I use Comfy UI daily", "I use ComfyUI daily"),
        ("I use COMFY-UI daily", "I use ComfyUI daily"),
        ("I use comfy   ui daily", "I use ComfyUI daily"),
        ("I use comfy you eye daily", "I use ComfyUI daily"),
        ("I use comfyui daily", "I use ComfyUI daily"),  # the term itself, wrong casing
        ("I use ComfyUI daily", "I use ComfyUI daily"),
        ("comfy, then comfy.", "ComfyUI, then ComfyUI."),
        ("the comfyness of it", "the comfyness of it"),  # never inside a word
        ("uncomfy chairs", "uncomfy chairs"),
        ("comfy uis", "ComfyUI uis"),  # "comfy ui" would end inside a word; "comfy" alone matches
        ("we run cooper netties on prem", "we run Kubernetes on prem"),
        ("I write see plus plus and c++ code", "I write C++ and C++ code"),
        ("c++11 is different", "c++11 is different"),
        ("in new york city today", "in New York City today"),  # longest match first
        ("in new york today", "in New York City today"),
        ("", ""),
    ],
)
def test_glossary(text: str, expected: str) -> None:
    assert _apply(text) == expected


def test_matches_do_not_depend_on_entry_order() -> None:
    text = "comfy ui and comfy and new york city in new york"
    assert _apply(text, ENTRIES) == _apply(text, tuple(reversed(ENTRIES)))


def test_changes_name_what_was_replaced() -> None:
    text = "so comfy you eye and Kubernetes"
    glossary = compile_glossary(normalize_entries(ENTRIES, LIMITS))
    (change,) = glossary.changes(text)  # the correctly spelled term makes no change
    assert (text[change.start : change.end], change.replacement) == ("comfy you eye", "ComfyUI")


def test_protected_and_lowercase_words() -> None:
    glossary = compile_glossary(
        normalize_entries(
            (GlossaryEntry("kubectl apply"), GlossaryEntry("iPhone"), GlossaryEntry("NASA")), LIMITS
        )
    )
    assert glossary.protected == {"kubectl", "apply", "iphone", "nasa"}
    assert glossary.lowercase == {"kubectl", "apply", "iPhone"}


def test_normalize_cleans_and_dedupes() -> None:
    (entry,) = normalize_entries(
        (GlossaryEntry("  Comfy   UI ", ("comfy you eye", "Comfy You  Eye", "comfy ui", "cumfy")),), LIMITS
    )
    assert entry == GlossaryEntry("Comfy UI", ("comfy you eye", "cumfy"))


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ((GlossaryEntry(""),), EmptyGlossaryPhraseError),
        ((GlossaryEntry("   "),), EmptyGlossaryPhraseError),
        ((GlossaryEntry("--"),), EmptyGlossaryPhraseError),
        ((GlossaryEntry("Term", ("",)),), EmptyGlossaryPhraseError),
        ((GlossaryEntry("x" * 41),), GlossaryPhraseTooLongError),
        ((GlossaryEntry("Term", ("y" * 41,)),), GlossaryPhraseTooLongError),
        ((GlossaryEntry("Term", tuple(f"alias {n}" for n in range(6))),), GlossaryTooLargeError),
        (tuple(GlossaryEntry(f"Term{n}") for n in range(11)), GlossaryTooLargeError),
        ((GlossaryEntry("Kubernetes", ("kube",)), GlossaryEntry("Kube", ())), GlossaryConflictError),
        ((GlossaryEntry("A1", ("same thing",)), GlossaryEntry("B1", ("Same-Thing",))), GlossaryConflictError),
        ((GlossaryEntry("ComfyUI"), GlossaryEntry("Comfyui")), GlossaryConflictError),
        # Within every per-entry limit, over the characters in all (10 x 5 x 40 = 2,000 > 1,000).
        (
            tuple(
                GlossaryEntry(f"T{n:02}" + "t" * 37, tuple(f"a{n:02}{k}" + "a" * 36 for k in range(4)))
                for n in range(10)
            ),
            GlossaryTooLargeError,
        ),
    ],
)
def test_invalid_glossaries_are_refused(
    entries: tuple[GlossaryEntry, ...], error: type[GlossaryError]
) -> None:
    with pytest.raises(error) as caught:
        normalize_entries(entries, LIMITS)
    assert caught.value.reason.startswith("glossary_")
    assert not caught.value.transient


def test_the_same_term_in_two_entries_is_not_a_conflict() -> None:
    entries = normalize_entries(
        (GlossaryEntry("ComfyUI", ("comfy ui",)), GlossaryEntry("ComfyUI", ("comfy you eye",))), LIMITS
    )
    assert _apply("comfy ui or comfy you eye", entries) == "ComfyUI or ComfyUI"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("new", "NEW"),
        ("newark and new york", "Newark and New York"),
        ("new yorker", "NEW yorker"),
        ("new york city hall", "NYC hall"),
        ("new-york-city", "NYC"),
        ("news", "news"),
        ("in der strasse und der STRASSE", "in der Straße und der Straße"),
        ("Straße", "Straße"),
        ("STRAßE", "Straße"),
    ],
)
def test_phrases_sharing_prefixes(text: str, expected: str) -> None:
    entries = (
        GlossaryEntry("NEW"),
        GlossaryEntry("Newark", ("new ark",)),
        GlossaryEntry("New York"),
        GlossaryEntry("NYC", ("new york city",)),
        GlossaryEntry("Straße", ("strasse",)),
    )
    assert _apply(text, entries) == expected


def test_a_large_glossary() -> None:
    entries = tuple(GlossaryEntry(f"Term{n}", (f"alias number {n}", f"other {n}")) for n in range(10))
    limits = GlossaryLimits(max_entries=10, max_aliases=5, max_phrase_chars=40)
    glossary = compile_glossary(normalize_entries(entries, limits))
    text = "alias number 7 and other 1 but alias number 10 and other 9"
    assert apply_changes(text, glossary.changes(text)) == "Term7 and Term1 but alias number 10 and Term9"


def test_the_largest_default_glossary_compiles_in_bounded_memory() -> None:
    """What the defaults let one request carry must be cheap to build: the budget is in characters
    because that is what the trie and the regex grow with (see ``GlossaryLimits.max_total_chars``)."""
    settings = CorrectionSettings()
    limits = GlossaryLimits(
        max_entries=settings.max_glossary_entries,
        max_aliases=settings.max_glossary_aliases,
        max_phrase_chars=settings.max_glossary_phrase_chars,
        max_total_chars=settings.max_glossary_chars,
    )
    rng = random.Random(7)

    def phrase() -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(3))

    entries: list[GlossaryEntry] = []
    total = 0
    while True:
        entry = GlossaryEntry(phrase().title(), tuple(phrase() for _ in range(20)))
        size = len(entry.term) + sum(len(a) for a in entry.aliases)
        if total + size > limits.max_total_chars:
            break
        entries.append(entry)
        total += size
    normalized = normalize_entries(tuple(entries), limits)
    compile_glossary.cache_clear()
    tracemalloc.start()
    try:
        glossary = compile_glossary(normalized)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        compile_glossary.cache_clear()
    assert glossary.pattern is not None
    assert peak < 64 * 2**20, f"compiling {total} characters peaked at {peak / 2**20:.0f} MiB"
    # One entry more than the budget is refused before anything is built.
    with pytest.raises(GlossaryTooLargeError):
        normalize_entries((*entries, GlossaryEntry("Extra", tuple(phrase() for _ in range(20)))), limits)
