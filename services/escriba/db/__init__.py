"""PostgreSQL: the task record of truth (asyncpg), its migrations and its repository.

Callers use :class:`TaskRepository` on a pool from :func:`create_pool` and get typed records back;
``escriba migrate`` calls :func:`run_migrations`. Nothing outside this package imports asyncpg.
"""

from escriba.db.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidCursor,
    MigrationChecksumMismatch,
    MigrationError,
    TaskAlreadyExists,
    TaskNotFound,
)
from escriba.db.migrate import Migration, migrate, run_migrations
from escriba.db.models import (
    NewTask,
    StageResult,
    StageTimings,
    StageWrite,
    TaskFilter,
    TaskPage,
    TaskRecord,
    TaskResult,
    Transition,
)
from escriba.db.pool import connect, create_pool
from escriba.db.settings import DatabaseSettings
from escriba.db.states import Stage, TaskStatus
from escriba.db.tasks import TaskRepository

__all__ = [
    "DatabaseError",
    "DatabaseSettings",
    "DatabaseUnavailable",
    "InvalidCursor",
    "Migration",
    "MigrationChecksumMismatch",
    "MigrationError",
    "NewTask",
    "Stage",
    "StageResult",
    "StageTimings",
    "StageWrite",
    "TaskAlreadyExists",
    "TaskFilter",
    "TaskNotFound",
    "TaskPage",
    "TaskRecord",
    "TaskRepository",
    "TaskResult",
    "TaskStatus",
    "Transition",
    "connect",
    "create_pool",
    "migrate",
    "run_migrations",
]
