"""Fixtures of the enrichment tests: reference data in the real PostgreSQL, and topic readers.

`World` builds one tenant's reference rows (each test gets its own tenant);
`TopicRecords` reads a real Kafka topic in a thread and keeps every record.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from activity_producer.dsn import for_libpq
from activity_schemas import ActivityEvent, ActorKind, ActorRef, ResourceRef, Visibility
from confluent_kafka import Consumer, KafkaException

POLL_TIMEOUT_S = 0.2
"""How long one poll of a topic reader waits, in seconds."""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(for_libpq(database_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


class World:
    """One tenant's resources, role bindings, subscriptions and preferences, written for real."""

    def __init__(self, pool: asyncpg.Pool, tenant: UUID | None = None) -> None:
        self.pool = pool
        self.tenant = tenant or uuid4()

    async def resource(
        self, parent: UUID | None = None, owner: UUID | None = None, kind: str = "document"
    ) -> UUID:
        resource_id = uuid4()
        await self.pool.execute(
            "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id)"
            " VALUES ($1, $2, $3, $4, $5)",
            self.tenant,
            resource_id,
            kind,
            parent,
            owner,
        )
        return resource_id

    async def grant(self, principal: UUID, resource: UUID, role: str) -> UUID:
        binding = uuid4()
        await self.pool.execute(
            "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role)"
            " VALUES ($1, $2, $3, $4, $5)",
            binding,
            self.tenant,
            principal,
            resource,
            role,
        )
        return binding

    async def revoke(self, binding: UUID) -> None:
        await self.pool.execute(
            "UPDATE role_bindings SET revoked_at = now() WHERE id = $1", binding
        )

    async def subscribe(self, principal: UUID, resource: UUID, scope: str) -> None:
        await self.pool.execute(
            "INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid4(),
            self.tenant,
            principal,
            resource,
            scope,
        )

    async def prefer(self, principal: UUID, mode: str, patterns: tuple[str, ...] = ()) -> None:
        await self.pool.execute(
            "INSERT INTO notification_preferences (tenant_id, principal_id, filter_mode,"
            " custom_actions) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tenant_id, principal_id) DO UPDATE"
            " SET filter_mode = EXCLUDED.filter_mode, custom_actions = EXCLUDED.custom_actions",
            self.tenant,
            principal,
            mode,
            list(patterns),
        )

    async def default(self, mode: str, patterns: tuple[str, ...] = ()) -> None:
        await self.pool.execute(
            "INSERT INTO tenant_notification_defaults (tenant_id, filter_mode, custom_actions)"
            " VALUES ($1, $2, $3)",
            self.tenant,
            mode,
            list(patterns),
        )

    def event(
        self,
        actor: UUID,
        resource: UUID,
        action: str = "resource.updated",
        visibility: Visibility = Visibility.RESOURCE,
        target: UUID | None = None,
        payload: dict[str, Any] | None = None,
        resource_type: str = "document",
    ) -> ActivityEvent:
        now = datetime.now(UTC)
        return ActivityEvent(
            event_id=uuid4(),
            tenant_id=self.tenant,
            time=now,
            recorded_at=now,
            correlation_id=uuid4(),
            actor=ActorRef(id=actor, kind=ActorKind.USER),
            resource=ResourceRef(id=resource, type=resource_type),
            action=action,
            target_principal_id=target,
            visibility=visibility,
            payload=payload or {},
            targets=("inbox", "resource", "chat"),
        )


@pytest.fixture
def world(pool: asyncpg.Pool) -> World:
    return World(pool)


@dataclass(frozen=True)
class TopicRecord:
    """One record read from a topic."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


class TopicRecords:
    """Reads every partition of a topic from its beginning, in a thread, and keeps the records."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.records: list[TopicRecord] = []
        self._lock = threading.Lock()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"enrichment-tests-{uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([topic])
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"records-{topic}", daemon=True)
        self._thread.start()

    def snapshot(self) -> list[TopicRecord]:
        with self._lock:
            return list(self.records)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for message in self._consumer.consume(500, timeout=POLL_TIMEOUT_S):
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    record = TopicRecord(
                        message.key(),
                        message.value(),
                        {name: value for name, value in (message.headers() or [])},
                    )
                    with self._lock:
                        self.records.append(record)
        finally:
            self._consumer.close()


@pytest.fixture
def topic_records() -> Iterator[list[TopicRecords]]:
    """Collects the readers a test starts and stops them afterwards."""
    readers: list[TopicRecords] = []
    yield readers
    for reader in readers:
        reader.stop()


async def eventually_async(predicate: Any, timeout_s: float = 60.0, step_s: float = 0.2) -> bool:
    """Poll `predicate` with asyncio sleeps until it holds or `timeout_s` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())
