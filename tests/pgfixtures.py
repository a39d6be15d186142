"""Postgres for the store's tests: a real server in a container, one per test session.

The image comes from MEDIC_TEST_POSTGRES_IMAGE: scripts/test sets it to the
locally built ``medic-test/postgres:15`` (no registry in CI); elsewhere the
default is the official ``postgres:16-alpine``. Each test that asks for
``postgres_url`` gets a database of its own, dropped afterwards, so tests do
not see each other's incidents. A test that stops or restarts Postgres asks for
``own_postgres`` instead: a server of its own, removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

DEFAULT_IMAGE = "postgres:16-alpine"
USER = "medic"
PASSWORD = "medic-test"
READY = "database system is ready to accept connections"


def postgres_image() -> str:
    return os.environ.get("MEDIC_TEST_POSTGRES_IMAGE") or DEFAULT_IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running Postgres container and how to reach it."""

    container: DockerContainer
    port: int

    def url(self, database: str = USER) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def docker(self) -> Any:
        """The docker SDK's container object, to stop and start the server."""
        return self.container.get_wrapped_container()

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until a connection succeeds (the log line alone can come before that)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def start_postgres() -> PostgresServer:
    # A fixed host port: a container stopped and started again keeps it, so a
    # store's URL stays valid across the outage a test makes.
    port = free_port()
    container = (
        DockerContainer(postgres_image())
        .with_env("POSTGRES_USER", USER)
        .with_env("POSTGRES_PASSWORD", PASSWORD)
        .with_env("POSTGRES_DB", USER)
        .with_bind_ports(5432, port)
        .with_command("postgres -c fsync=off -c synchronous_commit=off")
        .waiting_for(LogMessageWaitStrategy(READY).with_startup_timeout(60))
    )
    try:
        container.start()
        server = PostgresServer(container, port)
        server.wait_ready()
    except BaseException:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.container.stop()


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on ``server``, dropped on exit (for a fixture
    of a wider scope than ``postgres_url``'s)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, for tests that stop and start it."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.container.stop()
