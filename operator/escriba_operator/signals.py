"""Errors of the signal readers, and the Prometheus-compatible query reader.

Two kinds of failure lead to two behaviors in the algorithm: a signal that is *missing* (the consumer or
stream does not exist, a query returns no series) has no value to keep, so its fallback applies at once;
a read that *failed* (timeout, HTTP 500, NATS unreachable) keeps the last good value until it is older
than the signal's ``staleAfterSeconds``, so one dropped request does not move replicas.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp

from escriba.common.errors import TransientError

#: Prometheus's documented ``errorType`` values, the only part of an error answer the status repeats.
_ERROR_TYPES = frozenset(
    {"timeout", "canceled", "execution", "bad_data", "internal", "unavailable", "not_found"}
)


class SignalError(TransientError):
    """Reading a signal failed; the previous value stands until it is stale."""

    reason = "SignalUnavailable"


class SignalMissingError(SignalError):
    """The signal does not exist right now (no consumer, no series): its fallback applies at once."""

    reason = "SignalMissing"


class PrometheusReader:
    """Instant queries against ``/api/v1/query`` of Prometheus, Thanos, Mimir, VictoriaMetrics..."""

    def __init__(self, session: aiohttp.ClientSession, *, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def query(self, url: str, query: str) -> float:
        """The query's value: a scalar, or the mean of a vector's samples (e.g. one per GPU)."""
        return parse_result(await self._get(url, query), query)

    async def query_by(self, url: str, query: str, label: str) -> dict[str, float]:
        """A vector's samples by the value of one label (e.g. busy jobs per pod)."""
        return parse_by_label(await self._get(url, query), query, label)

    async def _get(self, url: str, query: str) -> Any:
        endpoint = url.rstrip("/") + "/api/v1/query"
        try:
            async with self._session.get(endpoint, params={"query": query}, timeout=self._timeout) as rsp:
                if rsp.status >= 400:
                    # Never the body: the status is readable by more people than the endpoint is.
                    raise SignalError(f"{endpoint}: HTTP {rsp.status}", reason="QueryFailed")
                body = await rsp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignalError(f"{endpoint}: {exc or type(exc).__name__}", reason="QueryFailed") from exc
        return body


def parse_by_label(body: Any, query: str, label: str) -> dict[str, float]:
    """A decoded vector answer as ``{label value: sample}`` (samples without the label are left out)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise SignalError(f"query {query!r} failed", reason="QueryFailed")
    data = body.get("data") or {}
    if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise SignalError(f"query {query!r} did not give a vector", reason="QueryFailed")
    out: dict[str, float] = {}
    try:
        for sample in data["result"]:
            key = (sample.get("metric") or {}).get(label)
            value = float(sample["value"][1])
            if isinstance(key, str) and math.isfinite(value):
                out[key] = value
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise SignalError(f"query {query!r}: malformed result", reason="QueryFailed") from exc
    return out


def parse_result(body: Any, query: str) -> float:
    """The value of a decoded `/api/v1/query` answer (see :meth:`PrometheusReader.query`)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        kind = body.get("errorType") if isinstance(body, dict) else None
        known = kind if kind in _ERROR_TYPES else "unknown"  # a fixed word, never the endpoint's text
        raise SignalError(f"query {query!r} failed ({known} error)", reason="QueryFailed")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    values: list[float] = []
    try:
        if kind == "scalar" and isinstance(result, list):
            values = [float(result[1])]
        elif kind == "vector" and isinstance(result, list):
            values = [float(sample["value"][1]) for sample in result]
        else:
            raise SignalError(f"query {query!r} gave a {kind}, not a scalar or vector", reason="QueryFailed")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise SignalError(f"query {query!r}: malformed result", reason="QueryFailed") from exc
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        raise SignalMissingError(f"query {query!r} returned no data", reason="NoData")
    return sum(finite) / len(finite)
