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
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from activity_producer.relay import RelaySettings
from activity_sinks.settings import SinkSettings

TEST_DATABASE = "activity_test"


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
    """Start the local stack, unless told it runs elsewhere; fail when a service is unreachable.

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
def database_url(relay_settings: RelaySettings) -> str:
    """Return the URL of a freshly created and migrated test database."""
    from activity_pipeline.demo.loader import recreate_database

    return recreate_database(relay_settings.database_url, TEST_DATABASE)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.1) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes; return its last value."""
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
