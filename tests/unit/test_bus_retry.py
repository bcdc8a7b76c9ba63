"""The retry policy: transient errors back off until the delivery bound, permanent ones give up at once."""

from __future__ import annotations

import pytest

from escriba.bus.errors import BusUnavailableError, DeliveriesExhaustedError
from escriba.bus.retry import Decision, decide, error_reason, is_transient, retry_delay
from escriba.common.errors import InvalidInputError, LimitExceededError, NotReadyError, TransientError

BACKOFF = (1.0, 5.0, 15.0)


def test_retry_delay_follows_the_backoff_list_and_repeats_the_last() -> None:
    assert [retry_delay(n, BACKOFF) for n in range(1, 7)] == [1.0, 5.0, 15.0, 15.0, 15.0, 15.0]
    assert retry_delay(0, BACKOFF) == 1.0
    assert retry_delay(3, ()) == 0.0


@pytest.mark.parametrize("error", [TransientError("x"), NotReadyError("x"), BusUnavailableError("x")])
def test_transient_errors_are_retried_with_backoff(error: Exception) -> None:
    assert decide(error, delivery_count=1, max_deliver=5, backoff_s=BACKOFF) == Decision(False, 1.0)
    assert decide(error, delivery_count=2, max_deliver=5, backoff_s=BACKOFF) == Decision(False, 5.0)
    assert decide(error, delivery_count=4, max_deliver=5, backoff_s=BACKOFF) == Decision(False, 15.0)


def test_the_last_delivery_gives_up_even_for_a_transient_error() -> None:
    assert decide(TransientError("x"), delivery_count=5, max_deliver=5, backoff_s=BACKOFF).give_up
    assert decide(TransientError("x"), delivery_count=6, max_deliver=5, backoff_s=BACKOFF).give_up


@pytest.mark.parametrize(
    "error", [InvalidInputError("x"), LimitExceededError("x"), DeliveriesExhaustedError("x")]
)
def test_permanent_errors_give_up_on_the_first_delivery(error: Exception) -> None:
    assert decide(error, delivery_count=1, max_deliver=5, backoff_s=BACKOFF) == Decision(True)


def test_unexpected_exceptions_are_retried_within_the_bound() -> None:
    error = KeyError("bug")
    assert is_transient(error)
    assert not decide(error, delivery_count=1, max_deliver=3, backoff_s=BACKOFF).give_up
    assert decide(error, delivery_count=3, max_deliver=3, backoff_s=BACKOFF).give_up
    assert error_reason(error) == "internal"


def test_unlimited_deliveries_never_give_up_on_transient_errors() -> None:
    assert not decide(TransientError("x"), delivery_count=1000, max_deliver=-1, backoff_s=BACKOFF).give_up


def test_reasons_come_from_the_error_hierarchy() -> None:
    assert error_reason(InvalidInputError("x")) == "invalid_input"
    assert error_reason(BusUnavailableError("x")) == "nats_unavailable"
