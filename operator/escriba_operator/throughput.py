"""Learning how fast one replica transcribes, from what the workers report.

The speed of a replica depends on the GPU, the model, batching and the mix of files (per-job overhead
weighs more on short clips), so a fixed number in the spec is wrong somewhere. The spec gives a starting
value; the first measurement replaces it, and each later one (audio-seconds per second of one fully
occupied replica, from the workers' Prometheus counters and job-slots gauges) is folded into an
exponential moving average whose weight grows with the time since the last one, so the estimate
follows a change of mix within a few ``smoothing_s`` without jumping on one noisy
rate. Pure: the caller passes the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from escriba_operator.policy import ThroughputModel


@dataclass(frozen=True)
class Estimate:
    """Audio-seconds per second of one busy replica; ``measured_at`` is None until a measurement."""

    value: float
    measured_at: float | None = None

    @property
    def measured(self) -> bool:
        return self.measured_at is not None


def start(model: ThroughputModel) -> Estimate:
    return Estimate(value=model.initial)


def update(
    estimate: Estimate,
    model: ThroughputModel,
    *,
    sample: float | None,
    observed_at: float | None,
    now: float,
    since: float,
) -> Estimate:
    """Fold a measurement into the estimate; ignore it when stale, already seen, or not a speed."""
    if sample is None or observed_at is None:
        return estimate
    if not math.isfinite(sample) or sample <= 0 or now - observed_at > model.stale_after_s:
        return estimate
    if estimate.measured_at is None:
        # The first measurement replaces the configured guess: it is already a rate over the query's
        # window, and weighing it by the time since start-up gave it weight zero on the first tick.
        return Estimate(value=sample, measured_at=observed_at)
    if observed_at <= estimate.measured_at:
        return estimate
    elapsed = max(observed_at - estimate.measured_at, 0.0)
    weight = 1.0 - math.exp(-elapsed / model.smoothing_s) if model.smoothing_s > 0 else 1.0
    value = estimate.value + weight * (sample - estimate.value)
    return Estimate(value=value, measured_at=observed_at)
