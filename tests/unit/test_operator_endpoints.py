"""The endpoint allow-list and the peering priority: the operator's two guards against acting wrongly."""

from __future__ import annotations

import pytest

from escriba_operator.endpoints import AllowList
from escriba_operator.peering import kopf_options, priority
from escriba_operator.settings import OperatorSettings

PLATFORM = AllowList.of(
    ["nats.escriba.svc.cluster.local:4222", "http://prometheus.monitoring:9090", "*.corp"]
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("nats://nats.escriba.svc.cluster.local:4222", True),
        ("tls://nats.escriba.svc.cluster.local", True),  # the default port
        ("nats://nats.escriba.svc.cluster.local:4223", False),
        ("nats://attacker.example:4222", False),
        ("http://prometheus.monitoring:9090", True),
        ("https://prometheus.monitoring:9090", False),  # the entry names its scheme
        ("http://prometheus.monitoring:9090.attacker.example", False),
        ("http://user:pw@prometheus.monitoring:9090", False),
        ("http://thanos.corp/api", True),
        ("http://metadata.google.internal", False),
        ("not a url", False),
    ],
)
def test_only_listed_addresses_pass(url: str, allowed: bool) -> None:
    assert PLATFORM.allows(url) is allowed


def test_an_empty_list_allows_everything() -> None:
    assert AllowList.of(["", " "]).allows("nats://anywhere:1")


def test_replicas_started_apart_get_distinct_priorities_and_the_first_ranks_higher() -> None:
    settings = OperatorSettings()
    first = priority(settings, clock=lambda: 1_800_000_000.000, tie_break=lambda: 0)
    later = priority(settings, clock=lambda: 1_800_000_000.001, tie_break=lambda: 0)
    same_ms = priority(settings, clock=lambda: 1_800_000_000.000, tie_break=lambda: 1)
    assert first > later and first != same_ms
    assert 0 < later < 2**63  # a JSON integer the API server keeps
    assert priority(OperatorSettings(priority=7)) == 7
    assert kopf_options(OperatorSettings(standalone=True))["peering_name"] is None
