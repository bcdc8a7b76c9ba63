"""How the operator's replicas share the work: kopf peering with a priority no two replicas share.

kopf pauses every operator that sees a live peer of higher priority, and, when two have the same
priority, pauses *both* ("possibly conflicting operators"): two replicas with the default priority would
sit idle, each waiting for the other. So unless one is given, the priority comes from the start time:
the replica that started first ranks higher and acts, a replica started later waits, and when the
acting one stops (it leaves the peering object on exit, or its entry expires after its lifetime) the
next one resumes. The sub-second part and a random tie-break keep two replicas started in the same
second apart.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from escriba_operator.settings import OperatorSettings

#: Start times are counted down from here (seconds, far beyond any clock), so earlier is higher.
_HORIZON_S = 10**10


def priority(
    settings: OperatorSettings,
    *,
    clock: Callable[[], float] = time.time,
    tie_break: Callable[[], int] = lambda: random.randrange(1000),
) -> int:
    """The peering priority of this replica: the configured one, or one from its start time."""
    if settings.priority:
        return settings.priority
    started_ms = int(clock() * 1000)
    return (_HORIZON_S * 1000 - started_ms) * 1000 + tie_break()


def kopf_options(settings: OperatorSettings) -> dict[str, Any]:
    """The keyword arguments of ``kopf.run``/``kopf.operator`` that follow from the settings."""
    return {
        "standalone": settings.standalone,
        "priority": priority(settings),
        # A peering name makes peering mandatory, so none in standalone mode.
        "peering_name": None if settings.standalone else settings.peering_name,
        "clusterwide": not settings.namespaces,
        "namespaces": list(settings.namespaces),
    }
