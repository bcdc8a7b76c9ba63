"""How every service reaches PostgreSQL, from ``ESCRIBA_DATABASE_*`` variables.

The schema is a setting (not only the URL's database) so several installs, or every test, can share one
server without seeing each other's tasks: each pooled connection sets ``search_path`` to it and the
migrations create it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from escriba.common.settings import (
    SettingsError,
    at_least,
    positive,
    resolve_secret_file,
    setting,
    settings_class,
)

# Lower-case unquoted-identifier form only: it is interpolated (quoted) into DDL and search_path, so it
# must not need escaping rules, and a typo such as "Public" should fail rather than create a new schema.
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: ``migrations/`` at the top of a source checkout (services/escriba/db/settings.py -> repo root).
CHECKOUT_MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
#: Where a wheel ships the same files when they are packaged as data of ``escriba.db``.
PACKAGED_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def schema_problem(schema: str) -> str | None:
    if _SCHEMA_RE.match(schema):
        return None
    return f"must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters), got {schema!r}"


def _check_url(url: str) -> str | None:
    if url == "" or url.startswith(("postgres://", "postgresql://")):
        return None
    return "must be a postgresql:// URL (or empty for the embedded local server)"


@settings_class
@dataclass(frozen=True)
class DatabaseSettings:
    url: str = setting(
        "ESCRIBA_DATABASE_URL",
        "",
        "PostgreSQL URL (postgresql://user:password@host:5432/db); empty = the local stack starts an "
        "embedded PostgreSQL",
        check=_check_url,
    )
    url_file: str = setting(
        "ESCRIBA_DATABASE_URL_FILE",
        "",
        "file holding the PostgreSQL URL (instead of ESCRIBA_DATABASE_URL: a mounted Secret, since the URL"
        " carries the password)",
    )
    schema: str = setting(
        "ESCRIBA_DATABASE_SCHEMA",
        "public",
        "schema holding Escriba's tables (created by the migrations; every connection's search_path)",
        check=schema_problem,
    )
    pool_min_size: int = setting(
        "ESCRIBA_DATABASE_POOL_MIN_SIZE", 1, "connections each process keeps open", check=at_least(0)
    )
    pool_max_size: int = setting(
        "ESCRIBA_DATABASE_POOL_MAX_SIZE", 10, "connections each process may open at most", check=at_least(1)
    )
    command_timeout_s: float = setting(
        "ESCRIBA_DATABASE_COMMAND_TIMEOUT_S", 30.0, "seconds one query may run", check=positive
    )
    connect_timeout_s: float = setting(
        "ESCRIBA_DATABASE_CONNECT_TIMEOUT_S", 10.0, "seconds one connection attempt may take", check=positive
    )
    connect_attempts: int = setting(
        "ESCRIBA_DATABASE_CONNECT_ATTEMPTS",
        10,
        "connection attempts at start-up before giving up (the server may still be starting)",
        check=at_least(1),
    )
    connect_backoff_s: float = setting(
        "ESCRIBA_DATABASE_CONNECT_BACKOFF_S",
        0.5,
        "seconds before the second connection attempt; doubles each attempt",
        check=positive,
    )
    connect_backoff_max_s: float = setting(
        "ESCRIBA_DATABASE_CONNECT_BACKOFF_MAX_S",
        10.0,
        "seconds between connection attempts at most",
        check=positive,
    )
    migrations_dir: str = setting(
        "ESCRIBA_DATABASE_MIGRATIONS_DIR",
        "",
        "directory of the numbered *.sql migrations; empty = the copy shipped in the package, else "
        "migrations/ of the source checkout",
    )
    migrate_lock_timeout_s: float = setting(
        "ESCRIBA_DATABASE_MIGRATE_LOCK_TIMEOUT_S",
        300.0,
        "seconds `escriba migrate` waits for another replica's migration to finish",
        check=positive,
    )

    def __post_init__(self) -> None:
        resolve_secret_file(self, "url", "ESCRIBA_DATABASE_URL", "url_file", "ESCRIBA_DATABASE_URL_FILE")
        if self.url_file and _check_url(self.url):
            # Not the content: it holds the password.
            raise SettingsError("ESCRIBA_DATABASE_URL_FILE", f"{self.url_file} holds no postgresql:// URL")
        if self.pool_min_size > self.pool_max_size:
            raise SettingsError(
                "ESCRIBA_DATABASE_POOL_MIN_SIZE",
                f"must not exceed ESCRIBA_DATABASE_POOL_MAX_SIZE ({self.pool_max_size}), "
                f"got {self.pool_min_size}",
            )

    def resolved_migrations_dir(self) -> Path:
        """The migrations directory to use; fails naming the variable when none can be found."""
        if self.migrations_dir:
            path = Path(self.migrations_dir).expanduser()
            if not path.is_dir():
                raise SettingsError("ESCRIBA_DATABASE_MIGRATIONS_DIR", f"{path} is not a directory")
            return path
        for candidate in (PACKAGED_MIGRATIONS_DIR, CHECKOUT_MIGRATIONS_DIR):
            if candidate.is_dir():
                return candidate
        raise SettingsError(
            "ESCRIBA_DATABASE_MIGRATIONS_DIR",
            f"is not set and neither {PACKAGED_MIGRATIONS_DIR} nor {CHECKOUT_MIGRATIONS_DIR} exists",
        )


@settings_class
@dataclass(frozen=True)
class RetentionSettings:
    """How long finished tasks are kept (``escriba purge``, the chart's purge CronJob)."""

    retention_days: float = setting(
        "ESCRIBA_PURGE_RETENTION_DAYS",
        30.0,
        "days a finished task (result, stage results, webhook attempts) is kept after it ended;"
        " `escriba purge` deletes older ones",
        check=positive,
    )
    archived_retention_days: float = setting(
        "ESCRIBA_PURGE_ARCHIVED_RETENTION_DAYS",
        7.0,
        "days an archived task is kept after it ended (at most ESCRIBA_PURGE_RETENTION_DAYS)",
        check=positive,
    )
    batch_size: int = setting(
        "ESCRIBA_PURGE_BATCH_SIZE",
        500,
        "tasks one purge statement deletes (short transactions, few row locks)",
        check=at_least(1),
    )

    def __post_init__(self) -> None:
        if self.archived_retention_days > self.retention_days:
            raise SettingsError(
                "ESCRIBA_PURGE_ARCHIVED_RETENTION_DAYS",
                f"must not exceed ESCRIBA_PURGE_RETENTION_DAYS ({self.retention_days:g}), got"
                f" {self.archived_retention_days:g}: archiving a task would keep it longer",
            )
