"""Temperature fallback for windows decoded in batches.

faster-whisper's sequential path re-decodes a window at a higher temperature when its text is too
repetitive (gzip compression ratio over a threshold) or too unlikely (average log-probability under
one), unless the window is probably silence. Its batched path takes the first result, loops and gaps
included. Here the batched paths do what the sequential one does, window by window: a window that
fails the thresholds goes back into a later batch at the next temperature, and after the last one the
best attempt is kept by faster-whisper's own rule (the most likely of those not too repetitive).

One departure: text counts as too repetitive only when it is also denser than speech can be. gzip
cannot tell a decoder loop from speech that really repeats itself (a chorus, a read-back, the same
announcement twice in one window): both compress well. A loop runs on until the decoder's length
limit, far more tokens than the window's seconds could hold; repeated speech keeps the pace of
speech. Sampling at a higher temperature is how Whisper escapes a loop, but on speech that really
repeats it only swaps a confident, complete transcript for a guessed one that compresses worse
because it left a repetition out (measured: 10 s of a 30 s window dropped). A loop at speech pace
is left to the correction service's repetition rule, which reads the same compression ratio.

This module is the policy and the loop; it knows nothing of Whisper or of how a batch is run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from escriba.transcript import COMPRESSION_RATIO_THRESHOLD, LOG_PROB_THRESHOLD, NO_SPEECH_THRESHOLD

TEMPERATURE_STEP: Final = 0.2
#: Text tokens per second of audio above which repetitive text is a loop rather than speech: fast
#: speech runs at about 4.5 (200 words a minute, with punctuation), a loop to the 448-token limit of
#: a 30 s window at about 15.
LOOP_TOKENS_PER_S: Final = 6.0


class Decoded(Protocol):
    """What the policy reads of one decoded window."""

    @property
    def avg_logprob(self) -> float: ...

    @property
    def compression_ratio(self) -> float: ...

    @property
    def no_speech_prob(self) -> float: ...

    @property
    def tokens_per_s(self) -> float: ...


D = TypeVar("D", bound=Decoded)
W = TypeVar("W")


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """Temperatures to try in order, and the thresholds a result must meet to stop there."""

    temperatures: tuple[float, ...] = (0.0,)
    compression_ratio_threshold: float | None = COMPRESSION_RATIO_THRESHOLD
    log_prob_threshold: float | None = LOG_PROB_THRESHOLD
    no_speech_threshold: float | None = NO_SPEECH_THRESHOLD
    loop_tokens_per_s: float = LOOP_TOKENS_PER_S

    @classmethod
    def starting_at(cls, temperature: float, *, enabled: bool) -> FallbackPolicy:
        """From ``temperature`` up to 1.0 in steps of 0.2 (only ``temperature`` when disabled)."""
        if not enabled:
            return cls((temperature,))
        steps = [temperature]
        while steps[-1] + TEMPERATURE_STEP <= 1.0 + 1e-9:
            steps.append(round(steps[-1] + TEMPERATURE_STEP, 6))
        return cls(tuple(steps))

    def too_repetitive(self, result: Decoded) -> bool:
        """Compresses like a loop and is denser than speech (see the module's docstring)."""
        limit = self.compression_ratio_threshold
        return (
            limit is not None
            and result.compression_ratio > limit
            and result.tokens_per_s > self.loop_tokens_per_s
        )

    def unlikely(self, result: Decoded) -> bool:
        return self.log_prob_threshold is not None and result.avg_logprob < self.log_prob_threshold

    def probably_silence(self, result: Decoded) -> bool:
        """Whisper's own rule: a high no-speech probability and a decoder that was guessing."""
        return (
            self.unlikely(result)
            and self.no_speech_threshold is not None
            and result.no_speech_prob > self.no_speech_threshold
        )

    def needs_fallback(self, result: Decoded) -> bool:
        if self.probably_silence(result):
            return False  # a higher temperature would only invent words
        return self.too_repetitive(result) or self.unlikely(result)

    def best(self, attempts: Sequence[D]) -> D:
        """faster-whisper's choice when every temperature failed."""
        usable = [a for a in attempts if not self.too_repetitive(a)] or list(attempts)
        return max(usable, key=lambda a: a.avg_logprob)


def decode_with_fallback(
    policy: FallbackPolicy,
    windows: Sequence[W],
    run: Callable[[float, Sequence[W]], Sequence[D]],
) -> tuple[list[D], int]:
    """Decode ``windows`` with ``run(temperature, windows)`` and re-decode those that fail at the next
    temperature. Returns one result per window, in order, and how many windows were re-decoded."""
    attempts: list[list[D]] = [[] for _ in windows]
    pending = list(range(len(windows)))
    retried = 0
    for step, temperature in enumerate(policy.temperatures):
        if not pending:
            break
        if step:
            retried += len(pending)
        results = run(temperature, [windows[i] for i in pending])
        for index, result in zip(pending, results, strict=True):
            attempts[index].append(result)
        pending = [i for i in pending if policy.needs_fallback(attempts[i][-1])]
    chosen = [policy.best(tried) if index in pending else tried[-1] for index, tried in enumerate(attempts)]
    return chosen, retried
