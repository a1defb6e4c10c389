"""The enrichment worker as it runs: outbox, relay and Faust agent on the real stack.

The relay and both workers run as child processes for this module against
the test database; each test builds its own tenant and reads the real
deliveries, audit and dead-letter topics.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from activity_pipeline.processes import PipelineProcesses
from activity_pipeline.workers import create_pipeline_topics
from activity_producer import record_activity_with_outbox
from activity_producer.dsn import for_sqlalchemy_async
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEnvelope
from activity_schemas.topics import AUDIT_TOPIC, DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, EVENTS_TOPIC
from confluent_kafka import Producer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.enrichment.conftest import TopicRecords, World, eventually_async

DELIVERY_TIMEOUT_S = 60.0


class Outputs:
    """The deliveries, audit and dead-letter records of this session, read from Kafka."""

    def __init__(self, settings: RelaySettings) -> None:
        bootstrap = settings.kafka_bootstrap_servers
        self.deliveries = TopicRecords(bootstrap, settings.topic_prefix + DELIVERIES_TOPIC)
        self.audit = TopicRecords(bootstrap, settings.topic_prefix + AUDIT_TOPIC)
        self.dead_letters = TopicRecords(bootstrap, settings.topic_prefix + DEAD_LETTER_TOPIC)

    def stop(self) -> None:
        for reader in (self.deliveries, self.audit, self.dead_letters):
            reader.stop()

    def delivery(self, event_id: UUID) -> dict[str, Any] | None:
        for record in self.deliveries.snapshot():
            value = json.loads(record.value)
            if value["event"]["event_id"] == str(event_id):
                return value
        return None

    def audit_record(self, event_id: UUID) -> dict[str, Any] | None:
        for record in self.audit.snapshot():
            value = json.loads(record.value)
            if value["event"]["event_id"] == str(event_id):
                return value
        return None

    def audit_headers(self, event_id: UUID) -> dict[str, bytes] | None:
        for record in self.audit.snapshot():
            if json.loads(record.value)["event"]["event_id"] == str(event_id):
                return record.headers
        return None

    async def recipients(self, event_id: UUID) -> dict[str, list[str]]:
        arrived = await eventually_async(
            lambda: self.delivery(event_id) is not None, DELIVERY_TIMEOUT_S
        )
        assert arrived, f"no delivery for event {event_id} within {DELIVERY_TIMEOUT_S} s"
        delivery = self.delivery(event_id)
        assert delivery is not None
        return {r["principal_id"]: r["reasons"] for r in delivery["recipients"]}


@pytest.fixture(scope="module")
def outputs(relay_settings: RelaySettings) -> Iterator[Outputs]:
    create_pipeline_topics(relay_settings)
    outputs = Outputs(relay_settings)
    yield outputs
    outputs.stop()


@pytest.fixture(scope="module")
def pipeline(
    database_url: str,
    relay_settings: RelaySettings,
    outputs: Outputs,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    archive: Path = tmp_path_factory.mktemp("archive")
    processes = PipelineProcesses(
        {"ACTIVITY_DATABASE_URL": database_url, "ACTIVITY_ARCHIVE_DIR": str(archive)},
        tmp_path_factory.mktemp("logs"),
    )
    with processes:
        processes.wait_until_ready(relay_settings.kafka_bootstrap_servers)
        yield


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    yield engine
    await engine.dispose()


def _envelope(
    world: World, actor: UUID, resource: UUID, action: str, resource_type: str = "document"
) -> ActivityEnvelope:
    return ActivityEnvelope(
        tenant_id=world.tenant,
        actor_principal_id=actor,
        resource_id=resource,
        resource_type=resource_type,
        action=action,
    )


async def _record(engine: AsyncEngine, envelope: ActivityEnvelope, sql: str = "") -> UUID:
    async with AsyncSession(engine) as session, session.begin():
        if sql:
            await session.execute(text(sql))
        recorded = await record_activity_with_outbox(session, envelope)
    return recorded.event_id


@pytest.mark.usefixtures("pipeline")
async def test_revoked_delegator_is_not_notified_after_the_revocation_activity(
    world: World, engine: AsyncEngine, outputs: Outputs
) -> None:
    owner, actor, delegator = uuid4(), uuid4(), uuid4()
    folder = await world.resource(owner=owner, kind="folder")
    document = await world.resource(folder, owner)
    binding = await world.grant(delegator, folder, "delegator")
    first = await _record(engine, _envelope(world, actor, document, "resource.updated"))
    before = await outputs.recipients(first)

    revocation = await _record(
        engine,
        _envelope(world, owner, binding, "role_binding.revoked", "role_binding"),
        f"UPDATE role_bindings SET revoked_at = now() WHERE id = '{binding}'",
    )
    await outputs.recipients(revocation)
    second = await _record(engine, _envelope(world, actor, document, "resource.updated"))
    after = await outputs.recipients(second)

    assert before == {str(owner): ["owner"], str(delegator): [f"role:delegator:{folder}"]}
    assert after == {str(owner): ["owner"]}


@pytest.mark.usefixtures("pipeline")
async def test_audit_record_holds_the_resolved_recipients(
    world: World, engine: AsyncEngine, outputs: Outputs
) -> None:
    owner, actor = uuid4(), uuid4()
    document = await world.resource(owner=owner)

    event_id = await _record(engine, _envelope(world, actor, document, "resource.created"))
    await outputs.recipients(event_id)
    arrived = await eventually_async(
        lambda: outputs.audit_record(event_id) is not None, DELIVERY_TIMEOUT_S
    )

    assert arrived
    assert outputs.audit_record(event_id)["recipients"] == [str(owner)]  # type: ignore[index]


@pytest.mark.usefixtures("pipeline")
async def test_audit_record_carries_cloudevents_headers(
    world: World, engine: AsyncEngine, outputs: Outputs
) -> None:
    owner, actor = uuid4(), uuid4()
    document = await world.resource(owner=owner)

    event_id = await _record(engine, _envelope(world, actor, document, "resource.created"))
    await outputs.recipients(event_id)
    arrived = await eventually_async(
        lambda: outputs.audit_headers(event_id) is not None, DELIVERY_TIMEOUT_S
    )
    headers = outputs.audit_headers(event_id) or {}

    assert arrived
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == str(event_id).encode()
    assert headers["ce_type"] == b"resource.created"
    assert headers["ce_source"] == f"/tenants/{world.tenant}".encode()
    assert headers["ce_subject"] == str(document).encode()
    assert "ce_time" in headers


@pytest.mark.usefixtures("pipeline")
async def test_poison_record_is_dead_lettered_and_later_records_flow(
    world: World, engine: AsyncEngine, outputs: Outputs, relay_settings: RelaySettings
) -> None:
    owner, actor = uuid4(), uuid4()
    document = await world.resource(owner=owner)
    poison_key = f"poison-{uuid4()}".encode()
    producer = Producer({"bootstrap.servers": relay_settings.kafka_bootstrap_servers})
    producer.produce(
        relay_settings.topic_prefix + EVENTS_TOPIC, key=poison_key, value=b'{"not": "an event"}'
    )
    producer.flush(10)

    later = await _record(engine, _envelope(world, actor, document, "resource.updated"))
    recipients = await outputs.recipients(later)
    dead = await eventually_async(
        lambda: any(r.key == poison_key for r in outputs.dead_letters.snapshot()),
        DELIVERY_TIMEOUT_S,
    )

    assert recipients == {str(owner): ["owner"]}
    assert dead
    (record,) = [r for r in outputs.dead_letters.snapshot() if r.key == poison_key]
    assert record.value == b'{"not": "an event"}'
    assert record.headers["dead_letter_reason"].startswith(
        b"value is not a valid ActivityEvent document"
    )


async def test_inbox_row_is_stored_for_the_target_principal(
    pool: asyncpg.Pool, world: World, engine: AsyncEngine, outputs: Outputs, pipeline: None
) -> None:
    owner, actor, invitee = uuid4(), uuid4(), uuid4()
    folder = await world.resource(owner=owner, kind="folder")
    envelope = ActivityEnvelope(
        tenant_id=world.tenant,
        actor_principal_id=actor,
        resource_id=folder,
        resource_type="folder",
        action="invite.created",
        target_principal_id=invitee,
    )

    event_id = await _record(engine, envelope)
    recipients = await outputs.recipients(event_id)
    rows = await pool.fetch(
        "SELECT principal_id FROM inbox_notifications WHERE event_id = $1", event_id
    )

    assert recipients[str(invitee)] == ["target"]
    assert [row["principal_id"] for row in rows] == [invitee]
