"""``make eval``'s scoring: the same normalization on both sides, corpus-level totals, uncovered speech."""

from __future__ import annotations

import pytest

from bench import wer


def test_normalization_unifies_case_punctuation_numbers_and_spelling() -> None:
    assert wer.normalize("Hello, World!") == wer.normalize("hello world")
    assert wer.normalize("one zero nine oh two") == wer.normalize("1 0 9 0 2") == wer.normalize("10902")
    assert wer.normalize("[laughter] montreal <VOCNOISE> forced") == "montreal forced"
    assert wer.normalize("colour") == wer.normalize("color")


def test_scores_count_substitutions_deletions_and_insertions() -> None:
    assert wer.score("the cat sat on the mat", "the cat sat on the mat") == wer.Score(0, 6)
    assert wer.score("the cat sat on the mat", "the dog sat on mat") == wer.Score(2, 6)
    assert wer.score("the cat", "") == wer.Score(2, 2)
    assert wer.score("", "hello there") == wer.Score(2, 0)
    total = wer.total([wer.Score(1, 10), wer.Score(3, 30)])
    assert total == wer.Score(4, 40) and total.wer == pytest.approx(0.1)


def test_longest_uncovered_speech() -> None:
    speech = [(0.0, 10.0), (12.0, 20.0)]
    assert wer.longest_uncovered(speech, [(0.0, 10.0), (12.0, 20.0)]) == 0.0
    assert wer.longest_uncovered(speech, [(0.0, 4.0), (7.5, 10.0), (12.0, 20.0)]) == pytest.approx(3.5)
    assert wer.longest_uncovered(speech, [(0.0, 10.0)]) == pytest.approx(8.0)
    assert wer.longest_uncovered(speech, []) == pytest.approx(10.0)
    assert wer.longest_uncovered(speech, [(-1.0, 25.0)]) == 0.0


def test_the_corpus_is_in_the_project_with_its_attribution() -> None:
    recordings = wer.corpus()
    assert len(recordings) == 29
    assert all(r.path.exists() and r.reference.strip() for r in recordings)
    assert sum(r.duration_s for r in recordings) == pytest.approx(451, abs=2)
    assert "Sources and licences" in (wer.CORPUS_DIR / "README.md").read_text()
