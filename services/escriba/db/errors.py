"""Database failures as Escriba errors, so callers decide on ``transient`` and never import asyncpg.

Whether a failure is worth retrying follows the SQLSTATE class: a lost connection, a server starting or
shutting down, too many clients, a serialization conflict or a deadlock all pass; a constraint violation
or a syntax error does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from escriba.common.errors import InvalidInputError, PermanentError, TransientError

# 08: connection exception, 40: transaction rollback (serialization, deadlock), 53: insufficient resources.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53"})
# admin/crash shutdown, cannot connect now (starting up), query cancelled (statement timeout).
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "57014"})


class TaskNotFound(InvalidInputError):
    """No task with this id is visible to this owner (another owner's task is reported the same way)."""

    reason = "not_found"
    grpc_code = "NOT_FOUND"


class TaskAlreadyExists(InvalidInputError):
    reason = "already_exists"
    grpc_code = "ALREADY_EXISTS"


class InvalidCursor(InvalidInputError):
    """A page token that this server did not issue, or that was altered."""

    reason = "invalid_page_token"


class DatabaseUnavailable(TransientError):
    reason = "database_unavailable"


class DatabaseError(PermanentError):
    """PostgreSQL rejected a statement: a bug or a schema mismatch, not worth retrying."""

    reason = "database_error"


class MigrationError(PermanentError):
    reason = "migration_failed"


class MigrationChecksumMismatch(MigrationError):
    """An applied migration file was edited afterwards: add a new file instead."""

    reason = "migration_checksum_mismatch"


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        return "closed" in text or "closing" in text or "released" in text
    return isinstance(exc, OSError | TimeoutError)


@contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Re-raise asyncpg, socket and timeout failures of ``action`` as :class:`DatabaseUnavailable`
    (retry) or :class:`DatabaseError` (do not)."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"{action}: database unavailable: {exc}") from exc
        raise DatabaseError(f"{action}: {type(exc).__name__}: {exc}") from exc
