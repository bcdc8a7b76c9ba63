"""NATS settings parse from the environment and name the variable when a value cannot work."""

from __future__ import annotations

import pytest

from escriba.bus import BusNames, NatsSettings
from escriba.common.settings import SettingsError, env_variables, load


def test_defaults() -> None:
    settings = load(NatsSettings, {})
    assert settings.url == "" and settings.servers == []
    assert settings.names == BusNames("escriba")
    assert settings.backoff == (1.0, 5.0, 15.0, 60.0)
    assert settings.max_deliver == 5 and settings.ack_wait_s == 30.0
    assert settings.heartbeat_s < settings.ack_wait_s
    assert settings.transcripts_ttl_s == 7 * 86400
    assert settings.corrections_ttl_s == 30 * 86400
    assert settings.normalized_ttl_s == 86400


def test_values_from_the_environment() -> None:
    settings = load(
        NatsSettings,
        {
            "ESCRIBA_NATS_URL": "nats://a:4222, nats://b:4222",
            "ESCRIBA_NATS_PREFIX": "t1a2",
            "ESCRIBA_NATS_BACKOFF_S": "0.5, 2,10",
            "ESCRIBA_NATS_MAX_DELIVER": "3",
            "ESCRIBA_NATS_ACK_WAIT_S": "2",
            "ESCRIBA_NATS_HEARTBEAT_S": "0.5",
        },
    )
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.names.jobs_stream == "T1A2_JOBS"
    assert settings.backoff == (0.5, 2.0, 10.0)
    assert settings.max_deliver == 3


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ESCRIBA_NATS_PREFIX": "Bad.Prefix"}, "ESCRIBA_NATS_PREFIX"),
        ({"ESCRIBA_NATS_BACKOFF_S": "1,x"}, "ESCRIBA_NATS_BACKOFF_S"),
        ({"ESCRIBA_NATS_BACKOFF_S": "1,-2"}, "ESCRIBA_NATS_BACKOFF_S"),
        ({"ESCRIBA_NATS_BACKOFF_S": " , "}, "ESCRIBA_NATS_BACKOFF_S"),
        ({"ESCRIBA_NATS_MAX_DELIVER": "0"}, "ESCRIBA_NATS_MAX_DELIVER"),
        ({"ESCRIBA_NATS_ACK_WAIT_S": "five"}, "ESCRIBA_NATS_ACK_WAIT_S"),
        ({"ESCRIBA_NATS_TRANSCRIPTS_TTL_S": "-1"}, "ESCRIBA_NATS_TRANSCRIPTS_TTL_S"),
        ({"ESCRIBA_NATS_ACK_WAIT_S": "5", "ESCRIBA_NATS_HEARTBEAT_S": "5"}, "ESCRIBA_NATS_HEARTBEAT_S"),
        ({"ESCRIBA_NATS_TOKEN": "t", "ESCRIBA_NATS_USER": "u"}, "ESCRIBA_NATS_TOKEN"),
        ({"ESCRIBA_NATS_PASSWORD": "p"}, "ESCRIBA_NATS_USER"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        load(NatsSettings, env)
    assert info.value.variable == variable


def test_every_variable_is_documented() -> None:
    documented = env_variables()
    for name in (
        "ESCRIBA_NATS_URL",
        "ESCRIBA_NATS_PREFIX",
        "ESCRIBA_NATS_MAX_DELIVER",
        "ESCRIBA_NATS_BACKOFF_S",
    ):
        assert documented[name]
