"""Which HTTP status a failed task's reason calls for: the caller's fault (4xx) or the server's (5xx).

A stage records only the reason of the error that failed a task; the error classes say whose fault
each reason is. Walking them once, rather than keeping a second list, keeps a new reason right here.
"""

from __future__ import annotations

import functools

import escriba.audio.errors
import escriba.bus.errors
import escriba.common.outbound
import escriba.correction.errors
import escriba.preprocess.errors
import escriba.transcription.errors  # noqa: F401 - imported so that their reasons are known
from escriba.common.errors import EscribaError, InvalidInputError, LimitExceededError

#: Over a size or length limit: HTTP 413 whichever stage found it.
TOO_LARGE_REASONS = frozenset({"input_too_large", "audio_too_long"})


def _subclasses(cls: type[EscribaError]) -> list[type[EscribaError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


@functools.cache
def _caller_reasons() -> frozenset[str]:
    bases: list[type[EscribaError]] = [InvalidInputError, LimitExceededError]
    return frozenset(c.reason for base in bases for c in (base, *_subclasses(base)))


def http_status_for_reason(reason: str) -> int:
    if reason in TOO_LARGE_REASONS:
        return 413
    if reason in _caller_reasons():
        return 400
    return 500
