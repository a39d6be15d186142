"""Brings the incident database's schema up to date from numbered SQL files.

The files in ``migrations/`` are named ``NNNN_what.sql`` and applied in order,
each in its own transaction together with its row in ``medic_schema_migrations``,
so a failed one leaves nothing half-done and a re-run applies only what is
missing. A session advisory lock makes two medic processes starting at once
take turns: the second finds the work done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from loguru import logger
from psycopg.rows import tuple_row

from agent.errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: The advisory lock key taken while migrating ("medic" in ASCII).
LOCK_KEY = 0x6D65646963

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def available(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``folder``, in order; StoreError for a misnamed or duplicate file."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise StoreError(f"Migration file {path} is not named like 0001_what.sql.")
        version = int(match.group(1))
        if version in found:
            raise StoreError(f"Migrations {found[version].name} and {path.name} share a number.")
        found[version] = Migration(version, path.name, path.read_text())
    if not found:
        # A package built without its data files; better said now than as missing tables.
        raise StoreError(
            f"No migration files were found in {folder}: this installation of medic lacks "
            "its SQL files (package data agent/store/migrations/*.sql). Reinstall medic."
        )
    return [found[v] for v in sorted(found)]


def migrate(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is missing on ``conn`` (in autocommit mode); the names applied.

    psycopg errors propagate; the caller translates them.
    """
    todo = available() if migrations is None else migrations
    applied: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS medic_schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute("SELECT version FROM medic_schema_migrations")
            done = {int(row[0]) for row in cur.fetchall()}
        for migration in todo:
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO medic_schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            logger.info("Applied database migration {}.", migration.name)
            applied.append(migration.name)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return applied
