"""Fixtures of the relay tests: their own database and topics, outbox rows, and a topic reader.

The relay tests use a database of their own (not the session's), because a
relay sends every unsent row it finds. Each test gets a fresh topic prefix, so
it reads only the records it caused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from activity_pipeline.demo.loader import drop_database, recreate_database
from activity_producer.dsn import for_libpq
from activity_producer.relay import OutboxRelay, RelaySettings, ensure_topics
from activity_schemas.topics import DEAD_LETTER_TOPIC, EVENTS_TOPIC
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from tests.conftest import TEST_DATABASE

RELAY_DATABASE = f"{TEST_DATABASE}_relay"

TEST_PARTITIONS = 3
"""Partitions of each test topic: more than one, so per-partition order is exercised."""

WAIT_S = 60.0
"""Maximum wait in seconds for a record or a relay on this shared, slow machine."""

_INSERT = """
    INSERT INTO activity_outbox (
        event_id, topic, message_key, event_type, tenant_id, subject, occurred_at, payload,
        headers
    )
    VALUES (%s, %s, %s, 'signal.created', %s, %s, clock_timestamp(), %s, %s)
    RETURNING id
"""


@dataclass(frozen=True)
class Record:
    """One record read back from a topic."""

    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    value: bytes

    @property
    def event_id(self) -> UUID:
        return UUID(self.headers["ce_id"])


@pytest.fixture(scope="module")
def relay_database_url(relay_settings: RelaySettings) -> Iterator[str]:
    """A migrated database for this module's relays; dropped afterwards."""
    yield recreate_database(relay_settings.database_url, RELAY_DATABASE)
    drop_database(relay_settings.database_url, RELAY_DATABASE)


@pytest.fixture
def outbox_url(relay_database_url: str) -> str:
    """The relay database with an empty outbox."""
    with psycopg.connect(for_libpq(relay_database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE activity_outbox")
    return relay_database_url


@pytest.fixture
def settings(relay_settings: RelaySettings, outbox_url: str) -> RelaySettings:
    """Relay settings on the empty outbox, with this test's own topics already created."""
    prefix = f"{relay_settings.topic_prefix}relay-{uuid4().hex[:6]}."
    ensure_topics(
        relay_settings.kafka_bootstrap_servers,
        [prefix + EVENTS_TOPIC, prefix + DEAD_LETTER_TOPIC],
        TEST_PARTITIONS,
        1,
    )
    return relay_settings.model_copy(
        update={
            "database_url": outbox_url,
            "topic_prefix": prefix,
            "relay_metrics_port": 0,
            "relay_poll_interval_s": 0.2,
        }
    )


class RelayThread:
    """An `OutboxRelay` running on a thread of the test process."""

    def __init__(self, settings: RelaySettings) -> None:
        self.relay = OutboxRelay(settings)
        self._thread = threading.Thread(target=self.relay.run, name="test-relay", daemon=True)

    def start(self) -> RelayThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.relay.stop()
        self._thread.join(WAIT_S)


@pytest.fixture
def running_relay(settings: RelaySettings) -> Iterator[OutboxRelay]:
    """A relay on this test's outbox and topics, stopped after the test."""
    thread = RelayThread(settings).start()
    yield thread.relay
    thread.stop()


def insert_row(
    conn: psycopg.Connection[Any],
    *,
    key: str | None = None,
    topic: str = EVENTS_TOPIC,
    payload: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, UUID]:
    """Insert one outbox row in the connection's transaction; return its id and event id."""
    event_id = uuid4()
    tenant_id = uuid4()
    row = conn.execute(
        _INSERT,
        (
            event_id,
            topic,
            key or f"{tenant_id}:{uuid4()}",
            tenant_id,
            "subject",
            json.dumps(payload or {"n": 1}),
            json.dumps(headers or {}),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), event_id


def insert_many(database_url: str, rows: int, keys: int) -> list[UUID]:
    """Commit `rows` outbox rows spread over `keys` keys in one statement; return event ids."""
    with psycopg.connect(for_libpq(database_url)) as conn:
        result = conn.execute(
            """
            INSERT INTO activity_outbox (
                event_id, topic, message_key, event_type, tenant_id, subject, occurred_at,
                payload
            )
            SELECT gen_random_uuid(), %s, 'key-' || (i %% %s), 'signal.created',
                   gen_random_uuid(), 'subject', clock_timestamp(), jsonb_build_object('n', i)
            FROM generate_series(1, %s) AS i
            RETURNING event_id
            """,
            (EVENTS_TOPIC, keys, rows),
        ).fetchall()
    return [row[0] for row in result]


def unsent_rows(database_url: str) -> int:
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM activity_outbox WHERE sent_at IS NULL").fetchone()
    return int(row[0]) if row else 0


def read_topic(bootstrap_servers: str, topic: str) -> list[Record]:
    """Read every record now on `topic`, partition by partition, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"relay-test-{uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: _end_offset(consumer, TopicPartition(topic, p)) for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Record] = []
        positions = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + WAIT_S
        while any(positions[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=1.0):
                if message.error():
                    continue
                partition, offset = message.partition(), message.offset()
                positions[partition] = offset + 1
                records.append(
                    Record(
                        partition=partition,
                        offset=offset,
                        key=(message.key() or b"").decode(),
                        headers={k: v.decode() for k, v in message.headers() or []},
                        value=message.value() or b"",
                    )
                )
        return records
    finally:
        consumer.close()


def _end_offset(consumer: Consumer, partition: TopicPartition) -> int:
    """The partition's high watermark, retried while a new topic's leaders settle."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return int(consumer.get_watermark_offsets(partition, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_records(bootstrap_servers: str, topic: str, event_ids: set[UUID]) -> list[Record]:
    """Read `topic` until every one of `event_ids` is on it, or the wait runs out."""
    deadline = time.monotonic() + WAIT_S
    while True:
        records = read_topic(bootstrap_servers, topic)
        if event_ids <= {r.event_id for r in records} or time.monotonic() > deadline:
            return records
        time.sleep(0.2)
