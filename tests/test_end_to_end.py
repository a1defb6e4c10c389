"""The whole path on the real stack: outbox, relay, enrichment, Centrifugo and the archive.

One relay and both Faust workers run as child processes for this module,
against the test database; each test builds its own tenant, so tests never
see each other's activities.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from activity_pipeline.demo.observer import InboxListener, TopicReader, end_offsets
from activity_pipeline.processes import PipelineProcesses
from activity_pipeline.workers import create_pipeline_topics
from activity_producer import record_activity_with_outbox
from activity_producer.dsn import for_libpq, for_sqlalchemy_async
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEnvelope
from activity_schemas.topics import EVENTS_TOPIC, RECEIPTS_TOPIC
from activity_sinks.archive import iter_archive
from activity_sinks.tokens import connection_token
from activity_streams.channels import inbox_channel
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.conftest import eventually

HMAC_SECRET = "dev-hmac-secret-change-me-0123456789"
WEBSOCKET_URL = "ws://127.0.0.1:18000/connection/websocket"
DELIVERY_TIMEOUT_S = 60.0


class _Collected:
    """Records read from a topic, by event id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_event: dict[UUID, dict[str, Any]] = {}

    def add_receipt(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.by_event[UUID(value["event_id"])] = value

    def add_event(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.by_event[UUID(value["event_id"])] = value

    def __contains__(self, event_id: UUID) -> bool:
        with self.lock:
            return event_id in self.by_event

    def get(self, event_id: UUID) -> dict[str, Any]:
        with self.lock:
            return self.by_event[event_id]


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def topics(relay_settings: RelaySettings) -> None:
    create_pipeline_topics(relay_settings)


@pytest.fixture(scope="module")
def receipts(relay_settings: RelaySettings, topics: None) -> Iterator[_Collected]:
    collected = _Collected()
    bootstrap = relay_settings.kafka_bootstrap_servers
    reader = TopicReader(
        bootstrap,
        relay_settings.topic_prefix + RECEIPTS_TOPIC,
        end_offsets(bootstrap, relay_settings.topic_prefix + RECEIPTS_TOPIC),
        collected.add_receipt,
    )
    reader.start()
    yield collected
    reader.stop()


@pytest.fixture(scope="module")
def events(relay_settings: RelaySettings, topics: None) -> Iterator[_Collected]:
    collected = _Collected()
    bootstrap = relay_settings.kafka_bootstrap_servers
    reader = TopicReader(
        bootstrap,
        relay_settings.topic_prefix + EVENTS_TOPIC,
        end_offsets(bootstrap, relay_settings.topic_prefix + EVENTS_TOPIC),
        collected.add_event,
    )
    reader.start()
    yield collected
    reader.stop()


@pytest.fixture(scope="module")
def pipeline(
    database_url: str,
    archive_dir: Path,
    relay_settings: RelaySettings,
    receipts: _Collected,
    events: _Collected,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    processes = PipelineProcesses(
        {"ACTIVITY_DATABASE_URL": database_url, "ACTIVITY_ARCHIVE_DIR": str(archive_dir)},
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


class Tree:
    """A tenant with root -> folder -> document, owned by `owner`, and helpers to grow it."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.tenant = uuid4()
        self.root, self.folder, self.document = uuid4(), uuid4(), uuid4()
        self.owner = uuid4()
        with self._connect() as conn:
            for resource, parent, kind in (
                (self.root, None, "workspace"),
                (self.folder, self.root, "folder"),
                (self.document, self.folder, "document"),
            ):
                conn.execute(
                    "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (self.tenant, resource, kind, parent, self.owner),
                )

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(for_libpq(self.database_url), autocommit=True)

    def grant(self, principal: UUID, resource: UUID, role: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role)"
                " VALUES (%s, %s, %s, %s, %s)",
                (uuid4(), self.tenant, principal, resource, role),
            )

    def subscribe(self, principal: UUID, resource: UUID, scope: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope)"
                " VALUES (%s, %s, %s, %s, %s)",
                (uuid4(), self.tenant, principal, resource, scope),
            )

    def envelope(self, actor: UUID, resource: UUID | None = None) -> ActivityEnvelope:
        return ActivityEnvelope(
            tenant_id=self.tenant,
            actor_principal_id=actor,
            resource_id=resource or self.document,
            resource_type="document",
            action="resource.updated",
            payload={"title": "Quarterly plan"},
        )


async def _listen(tree: Tree, principal: UUID) -> InboxListener:
    listener = InboxListener(
        WEBSOCKET_URL,
        connection_token(principal, HMAC_SECRET),
        inbox_channel(tree.tenant, principal),
    )
    await listener.start()
    return listener


async def _commit(engine: AsyncEngine, envelope: ActivityEnvelope) -> UUID:
    async with AsyncSession(engine) as session, session.begin():
        recorded = await record_activity_with_outbox(session, envelope)
    return recorded.event_id


@pytest.mark.usefixtures("pipeline")
async def test_owner_receives_activity_and_actor_does_not(
    database_url: str, engine: AsyncEngine, receipts: _Collected
) -> None:
    tree = Tree(database_url)
    actor = uuid4()
    tree.grant(actor, tree.root, "editor")
    owner_client = await _listen(tree, tree.owner)
    actor_client = await _listen(tree, actor)

    event_id = await _commit(engine, tree.envelope(actor))
    delivered = await eventually(
        lambda: event_id in owner_client.event_ids and event_id in receipts, DELIVERY_TIMEOUT_S
    )
    await owner_client.stop()
    await actor_client.stop()

    assert delivered
    assert actor_client.publications == 0
    assert [str(tree.owner)] == receipts.get(event_id)["recipients"]


@pytest.mark.usefixtures("pipeline")
async def test_rolled_back_activity_reaches_nothing(
    database_url: str,
    engine: AsyncEngine,
    receipts: _Collected,
    events: _Collected,
    archive_dir: Path,
) -> None:
    tree = Tree(database_url)
    actor = uuid4()
    owner_client = await _listen(tree, tree.owner)

    async with AsyncSession(engine) as session:
        await session.begin()
        rolled_back = (await record_activity_with_outbox(session, tree.envelope(actor))).event_id
        await session.rollback()
    # A committed activity on the same resource shares the partition, so once it is
    # archived and delivered, the rolled-back one would have been too.
    marker = await _commit(engine, tree.envelope(actor))
    archived: set[UUID] = set()

    def marker_done() -> bool:
        archived.update(record.event.event_id for record in iter_archive(archive_dir))
        return marker in receipts and marker in archived and marker in owner_client.event_ids

    finished = await eventually(marker_done, DELIVERY_TIMEOUT_S, step_s=0.5)
    await owner_client.stop()

    assert finished
    assert rolled_back not in events
    assert rolled_back not in receipts
    assert rolled_back not in archived
    assert rolled_back not in owner_client.event_ids


@pytest.mark.usefixtures("pipeline")
async def test_descendants_subscriber_notified_resource_subscriber_not(
    database_url: str, engine: AsyncEngine, receipts: _Collected
) -> None:
    tree = Tree(database_url)
    actor, deep, shallow = uuid4(), uuid4(), uuid4()
    for principal in (deep, shallow):
        tree.grant(principal, tree.root, "viewer")
    tree.subscribe(deep, tree.folder, "descendants")
    tree.subscribe(shallow, tree.folder, "resource")
    deep_client = await _listen(tree, deep)
    shallow_client = await _listen(tree, shallow)

    event_id = await _commit(engine, tree.envelope(actor))
    delivered = await eventually(
        lambda: event_id in deep_client.event_ids and event_id in receipts, DELIVERY_TIMEOUT_S
    )
    await deep_client.stop()
    await shallow_client.stop()

    assert delivered
    assert str(shallow) not in receipts.get(event_id)["recipients"]
    assert shallow_client.publications == 0
