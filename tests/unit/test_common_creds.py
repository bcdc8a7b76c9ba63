"""A file that is not a .creds file is refused before nats-py would loop forever looking into it."""

from __future__ import annotations

import pytest

from escriba.common.creds import creds_problem
from tests.support.nats_secure import creds_text

pytestmark = pytest.mark.timeout(10)


def test_a_creds_file_as_nsc_writes_it_passes() -> None:
    assert creds_problem(creds_text("eyJ0eXAiOiJKV1QifQ.e30.c2ln", "SUAEXAMPLESEED")) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no user JWT block"),
        ("user: alice\npassword: secret\n", "no user JWT block"),
        ("-----BEGIN NATS USER JWT-----\n\n", "the user JWT block is empty"),
        ("-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n", "no NKey seed block"),
        (
            "-----BEGIN NATS USER JWT-----\nabc\n-----BEGIN USER NKEY SEED-----\n",
            "the NKey seed block is empty",
        ),
    ],
)
def test_anything_else_says_what_is_missing(text: str, problem: str) -> None:
    assert problem in (creds_problem(text) or "")
