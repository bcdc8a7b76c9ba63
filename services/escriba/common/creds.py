"""A NATS ``.creds`` file's shape, checked before nats-py reads it.

nats-py looks for the ``BEGIN NATS USER JWT`` line in a loop that never ends when the line is missing,
inside the event loop: a wrong file mounted in place of the credentials would freeze the process
instead of failing it. Checked here first, so it fails with a readable reason.
"""

from __future__ import annotations

_JWT_MARK = "BEGIN NATS USER JWT"
_SEED_MARK = "BEGIN USER NKEY SEED"


def creds_problem(text: str) -> str | None:
    """Why ``text`` is not a ``.creds`` file (a user JWT and its NKey seed), or None when it is."""
    lines = text.splitlines()
    for mark, what in ((_JWT_MARK, "user JWT"), (_SEED_MARK, "NKey seed")):
        index = next((i for i, line in enumerate(lines) if mark in line), None)
        if index is None:
            return f"no {what} block ('-----{mark}-----')"
        if index + 1 >= len(lines) or not lines[index + 1].strip():
            return f"the {what} block is empty"
    return None
