"""Fixtures shared by the whole suite: the real stack, a fresh database, and helpers.

The suite runs against real PostgreSQL, Kafka and Centrifugo. When a service
is not reachable the session fails at once with the command that starts it;
no test is skipped for a missing service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit
from uuid import uuid4

import pytest
import structlog
from activity_producer.relay import RelaySettings
from activity_sinks.settings import SinkSettings

SESSION_ID = uuid4().hex[:8]
TEST_DATABASE = f"activity_test_{SESSION_ID}"
"""Database of this test session; several sessions can share one stack."""

# Topics and consumer groups of this session get their own names, so that a running
# demo or another test session on the same Kafka never mixes with this one.
os.environ.setdefault("ACTIVITY_TOPIC_PREFIX", f"test-{SESSION_ID}.")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def relay_settings() -> RelaySettings:
    return RelaySettings()


@pytest.fixture(scope="session")
def sink_settings() -> SinkSettings:
    return SinkSettings()


@pytest.fixture(scope="session", autouse=True)
def stack_is_running(relay_settings: RelaySettings, sink_settings: SinkSettings) -> None:
    """Start the local stack unless it runs elsewhere, and fail when a service is unreachable.

    Set `ACTIVITY_TEST_STACK=external` to test against services started some other
    way, such as `docker compose up`.
    """
    if os.environ.get("ACTIVITY_TEST_STACK") != "external":
        from activity_pipeline.stack import StackError, up

        try:
            up()
        except StackError as exc:
            pytest.exit(f"cannot start the local stack: {exc}", returncode=3)
    database = urlsplit(relay_settings.database_url)
    kafka_host, kafka_port = relay_settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)
    centrifugo = urlsplit(sink_settings.centrifugo_api_url)
    services = {
        "PostgreSQL": (database.hostname or "127.0.0.1", database.port or 5432),
        "Kafka": (kafka_host, int(kafka_port)),
        "Centrifugo": (centrifugo.hostname or "127.0.0.1", centrifugo.port or 80),
    }
    missing = [
        f"{name} at {host}:{port}"
        for name, (host, port) in services.items()
        if not _reachable(host, port)
    ]
    if missing:
        pytest.exit(
            f"not reachable: {', '.join(missing)}; start the stack with `uv run activity stack up`",
            returncode=3,
        )


@pytest.fixture(scope="session")
def database_url(relay_settings: RelaySettings) -> Iterator[str]:
    """Return the URL of a freshly created and migrated test database; drop it afterwards."""
    from activity_pipeline.demo.loader import drop_database, recreate_database

    yield recreate_database(relay_settings.database_url, TEST_DATABASE)
    drop_database(relay_settings.database_url, TEST_DATABASE)


@pytest.fixture(scope="session", autouse=True)
def session_topics(relay_settings: RelaySettings) -> Iterator[None]:
    """Delete the topics of this session at its end."""
    yield
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": relay_settings.kafka_bootstrap_servers})
    names = [
        name
        for name in admin.list_topics(timeout=10).topics
        if name.startswith(relay_settings.topic_prefix)
    ]
    if names and relay_settings.topic_prefix:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    """Give each test structlog's defaults, whatever an earlier test's command configured."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.1) -> bool:
    """Poll `predicate` until it returns true or `timeout_s` passes, and return its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


async def eventually(
    predicate: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.1
) -> bool:
    """Like `wait_until`, but sleeps with asyncio so that clients on the loop keep running."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return predicate()
