"""From a raw recommendation to the replicas to ask for: stabilization, scale-to-zero, rates, bounds.

This follows the HPA's ``normalizeDesiredReplicasWithBehaviors`` so SREs can carry their intuition (and
their ``behavior`` blocks) over: the recommendation history is kept per autoscaler, scale-up takes the
lowest recommendation of its window and scale-down the highest of its own, and rate policies bound the
change per period counting the scale events already made in it. Two additions are ours:

* scale to zero only from exactly one replica, and only once the queue has been idle for the cooldown;
  from zero, the first pending job activates one replica at once (no window, no rate policy delays it);
* an autoscaler that just started (operator restart, fail-over) has no history, so it holds scale-down
  for one scale-down window rather than trusting a single sample;
* a burst (Knative's panic mode): a recommendation ``burst_ratio`` times the current replicas or more
  skips the scale-up window and rate policies, because 4 pods a minute against a backlog ten times the
  fleet's capacity is a queue that waits for nothing; ``maxReplicas`` still bounds it.

Pure: no clock, no I/O. The bench's message-count rule goes through the same function, so the comparison
is between the signals, not between two behaviors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from escriba_operator.policy import Behavior, PolicyType, ScalingRules, SelectPolicy


class Limit(StrEnum):
    """The factor that set or limited the decision, reported in the status (``limitedBy``)."""

    BACKLOG = "Backlog"
    JOB_COUNT = "JobCount"
    TOLERANCE = "Tolerance"
    ACTIVATION = "Activation"
    BACKLOG_FALLBACK = "BacklogFallback"
    GPU_SATURATION = "GPUSaturation"
    GPU_BUSY = "GPUBusy"
    GPU_FALLBACK = "GPUFallback"
    SLOTS_SATURATION = "SlotsSaturation"
    BURST = "Burst"
    SCALE_UP_STABILIZATION = "ScaleUpStabilization"
    SCALE_DOWN_STABILIZATION = "ScaleDownStabilization"
    SCALE_TO_ZERO_COOLDOWN = "ScaleToZeroCooldown"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"
    TOO_MANY_REPLICAS = "TooManyReplicas"
    TOO_FEW_REPLICAS = "TooFewReplicas"


#: The scale-up limit when no rate policy is given (the HPA's int32 maximum).
_UNLIMITED = 2**31 - 1

#: Factors that held the replicas back from what the signals asked (the ``ScalingLimited`` condition).
LIMITING = frozenset(
    {
        Limit.SCALE_UP_STABILIZATION,
        Limit.SCALE_DOWN_STABILIZATION,
        Limit.SCALE_TO_ZERO_COOLDOWN,
        Limit.SCALE_UP_LIMIT,
        Limit.SCALE_DOWN_LIMIT,
        Limit.TOO_MANY_REPLICAS,
        Limit.TOO_FEW_REPLICAS,
    }
)


@dataclass(frozen=True)
class Bounds:
    """Replica bounds and the idle time (seconds) before one replica may go to zero."""

    min_replicas: int
    max_replicas: int
    scale_to_zero_cooldown_s: float = 300.0


@dataclass(frozen=True)
class BehaviorState:
    """What the behavior remembers between evaluations (times are seconds on the caller's clock)."""

    since: float | None = None
    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[tuple[float, int], ...] = ()
    last_active_at: float | None = None


@dataclass(frozen=True)
class Normalized:
    desired: int
    limited_by: Limit | None
    state: BehaviorState


def normalize(
    *,
    recommendation: int,
    current: int,
    active: bool,
    now: float,
    behavior: Behavior,
    bounds: Bounds,
    state: BehaviorState,
) -> Normalized:
    """Turn ``recommendation`` into the replicas to set now; ``active``: the queue holds work to do."""
    since = state.since if state.since is not None else now
    last_active_at = now if active else state.last_active_at
    up_window = behavior.scale_up.stabilization_window_s
    down_window = behavior.scale_down.stabilization_window_s
    horizon = now - max(up_window, down_window)
    history = (*((t, r) for t, r in state.recommendations if t > horizon), (now, recommendation))

    limited_by: Limit | None = None
    burst = (
        behavior.burst_ratio > 0
        and behavior.scale_up.select is not SelectPolicy.DISABLED
        and recommendation > current
        and recommendation >= behavior.burst_ratio * max(current, 1)
    )
    up_rec = min(r for t, r in history if t > now - up_window or t == now)
    if burst:
        up_rec = recommendation
    down_rec = max(r for t, r in history if t > now - down_window or t == now)
    if now - since < down_window:
        down_rec = max(down_rec, current)
    desired = current
    if desired < up_rec:
        desired = up_rec
    if desired > down_rec:
        desired = down_rec
    if recommendation > current and desired < recommendation:
        limited_by = Limit.SCALE_UP_STABILIZATION
    elif recommendation < current and desired > recommendation:
        limited_by = Limit.SCALE_DOWN_STABILIZATION

    if current == 0 and active and desired < 1:
        desired = 1
    if bounds.min_replicas == 0 and desired == 0 and current > 1:
        desired, limited_by = 1, Limit.SCALE_TO_ZERO_COOLDOWN
    elif bounds.min_replicas == 0 and desired == 0 and current == 1:
        idle_since = last_active_at if last_active_at is not None else since
        if now - idle_since < bounds.scale_to_zero_cooldown_s:
            desired, limited_by = 1, Limit.SCALE_TO_ZERO_COOLDOWN

    if desired > current:
        limit = _scale_up_limit(current, now, state.scale_events, behavior.scale_up)
        if current == 0 and active:
            limit = max(limit, 1)
        if burst:
            limit, limited_by = max(limit, desired), Limit.BURST
        allowed, reason = (limit, Limit.SCALE_UP_LIMIT)
        if bounds.max_replicas <= limit:
            allowed, reason = bounds.max_replicas, Limit.TOO_MANY_REPLICAS
        if desired > allowed:
            desired, limited_by = allowed, reason
    elif desired < current:
        limit = _scale_down_limit(current, now, state.scale_events, behavior.scale_down)
        allowed, reason = (limit, Limit.SCALE_DOWN_LIMIT)
        if bounds.min_replicas >= limit:
            allowed, reason = bounds.min_replicas, Limit.TOO_FEW_REPLICAS
        if desired < allowed:
            desired, limited_by = allowed, reason
    if desired > bounds.max_replicas:  # the bounds changed under a steady target
        desired, limited_by = bounds.max_replicas, Limit.TOO_MANY_REPLICAS
    elif desired < bounds.min_replicas:
        desired, limited_by = bounds.min_replicas, Limit.TOO_FEW_REPLICAS

    new_state = replace(state, since=since, recommendations=history, last_active_at=last_active_at)
    return Normalized(desired=desired, limited_by=limited_by, state=new_state)


def record_scale(
    state: BehaviorState, *, now: float, current: int, desired: int, behavior: Behavior
) -> BehaviorState:
    """Remember a scale that was applied, for the rate policies of the periods to come."""
    periods = [p.period_s for p in behavior.scale_up.policies + behavior.scale_down.policies] or [0.0]
    horizon = now - max(periods)
    events = tuple((t, d) for t, d in state.scale_events if t > horizon)
    if desired != current:
        events += ((now, desired - current),)
    return replace(state, scale_events=events)


def _changes(events: tuple[tuple[float, int], ...], now: float, period_s: float) -> tuple[int, int]:
    added = sum(d for t, d in events if d > 0 and t > now - period_s)
    removed = -sum(d for t, d in events if d < 0 and t > now - period_s)
    return added, removed


def _scale_up_limit(
    current: int, now: float, events: tuple[tuple[float, int], ...], rules: ScalingRules
) -> int:
    if rules.select is SelectPolicy.DISABLED:
        return current
    if not rules.policies:
        return _UNLIMITED
    proposals = []
    for policy in rules.policies:
        added, removed = _changes(events, now, policy.period_s)
        start = current - added + removed
        if policy.type is PolicyType.PODS:
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    limit = max(proposals) if rules.select is SelectPolicy.MAX else min(proposals)
    return max(limit, current)


def _scale_down_limit(
    current: int, now: float, events: tuple[tuple[float, int], ...], rules: ScalingRules
) -> int:
    if rules.select is SelectPolicy.DISABLED:
        return current
    if not rules.policies:
        return 0
    proposals = []
    for policy in rules.policies:
        added, removed = _changes(events, now, policy.period_s)
        start = current - added + removed
        if policy.type is PolicyType.PODS:
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    limit = min(proposals) if rules.select is SelectPolicy.MAX else max(proposals)
    return min(max(limit, 0), current)
