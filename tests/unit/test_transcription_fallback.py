"""Temperature fallback for batched windows: faster-whisper's sequential rules, window by window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from escriba.transcription.fallback import FallbackPolicy, decode_with_fallback


@dataclass(frozen=True)
class Out:
    window: str
    temperature: float
    avg_logprob: float = -0.2
    compression_ratio: float = 1.5
    no_speech_prob: float = 0.01
    tokens_per_s: float = 14.0  # as dense as a loop to the length limit, unless a test says otherwise


def test_temperatures_step_up_to_one() -> None:
    assert FallbackPolicy.starting_at(0.0, enabled=True).temperatures == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert FallbackPolicy.starting_at(0.5, enabled=True).temperatures == (0.5, 0.7, 0.9)
    assert FallbackPolicy.starting_at(0.3, enabled=False).temperatures == (0.3,)


def test_thresholds_are_the_sequential_ones() -> None:
    policy = FallbackPolicy.starting_at(0.0, enabled=True)
    assert not policy.needs_fallback(Out("a", 0))
    assert policy.needs_fallback(Out("a", 0, compression_ratio=2.5))
    assert policy.needs_fallback(Out("a", 0, avg_logprob=-1.2))
    # Low likelihood over probable silence: no fallback (a higher temperature would only invent words).
    assert not policy.needs_fallback(Out("a", 0, avg_logprob=-1.2, no_speech_prob=0.7))


def test_speech_that_repeats_at_speech_pace_is_not_a_loop() -> None:
    """The same sentence said twice in a window compresses like a loop; sampling it again at a higher
    temperature only trades a confident transcript for one that left a repetition out."""
    policy = FallbackPolicy.starting_at(0.0, enabled=True)
    repeated = Out("a", 0, compression_ratio=3.1, avg_logprob=-0.12, tokens_per_s=3.0)
    assert not policy.too_repetitive(repeated) and not policy.needs_fallback(repeated)
    assert policy.needs_fallback(Out("a", 0, compression_ratio=3.1, tokens_per_s=7.0))
    # Still unlikely is still a reason, whatever the pace.
    assert policy.needs_fallback(Out("a", 0, avg_logprob=-1.2, tokens_per_s=3.0))


def test_only_failing_windows_go_back_at_the_next_temperature() -> None:
    calls: list[tuple[float, list[str]]] = []
    # Window "b" loops at 0 and 0.2, is fine at 0.4; "c" never gets better.
    quality = {("b", 0.0): 2.8, ("b", 0.2): 2.6}

    def run(temperature: float, windows: Sequence[str]) -> list[Out]:
        calls.append((temperature, list(windows)))
        return [
            Out(
                w,
                temperature,
                compression_ratio=quality.get((w, temperature), 1.5) if w != "c" else 3.0,
                avg_logprob=-0.1 - temperature if w == "c" else -0.2,
            )
            for w in windows
        ]

    results, retried = decode_with_fallback(
        FallbackPolicy.starting_at(0.0, enabled=True), ["a", "b", "c"], run
    )
    assert calls[0] == (0.0, ["a", "b", "c"])
    assert calls[1] == (0.2, ["b", "c"])
    assert calls[2] == (0.4, ["b", "c"])
    assert all(windows == ["c"] for _, windows in calls[3:])
    assert [r.window for r in results] == ["a", "b", "c"]
    assert results[0].temperature == 0.0 and results[1].temperature == 0.4
    # Every attempt of "c" is too repetitive: the most likely one is kept, as faster-whisper does.
    assert results[2].temperature == 0.0
    assert retried == 2 + 2 + 1 + 1 + 1


def test_disabled_fallback_decodes_once() -> None:
    def run(temperature: float, windows: Sequence[str]) -> list[Out]:
        return [Out(w, temperature, compression_ratio=3.0) for w in windows]

    results, retried = decode_with_fallback(FallbackPolicy.starting_at(0.0, enabled=False), ["a"], run)
    assert retried == 0 and results[0].temperature == 0.0
