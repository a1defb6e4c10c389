"""The Faust publishing agent in a real sink worker: dead letters, receipts and replay.

The worker of this module runs under its own topic prefix, so that its
consumer group and topics never meet the other modules' workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from activity_pipeline.deadletter_cli import replay_dead_letters
from activity_pipeline.workers import create_pipeline_topics
from activity_producer.relay import RelaySettings
from activity_schemas import Delivery, DeliveryReceipt
from activity_schemas.topics import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, RECEIPTS_TOPIC
from activity_sinks.settings import SinkSettings
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.conftest import eventually
from tests.sinks.support import WAIT_S, InboxClient, free_port, make_delivery

READY_TIMEOUT_S = 120.0
"""How long the sink worker may take to join its consumer group on a busy machine."""


class TopicTail:
    """Reads a topic from its current end, keeping (key, value, headers) of every record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.records: list[tuple[bytes | None, bytes, dict[str, bytes]]] = []
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "sink-test", "enable.auto.commit": False}
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        starts = []
        for partition in metadata.topics[topic].partitions:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10
            )
            starts.append(TopicPartition(topic, partition, high))
        self._consumer.assign(starts)

    def poll(self) -> None:
        for message in self._consumer.consume(500, timeout=0.2):
            if message.error() is None:
                headers = dict(message.headers() or [])
                self.records.append((message.key(), message.value(), headers))

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture(scope="module")
def sink_prefix() -> str:
    return f"{os.environ['ACTIVITY_TOPIC_PREFIX']}sinkagent."


@pytest.fixture(scope="module")
def worker_settings(sink_prefix: str) -> SinkSettings:
    return SinkSettings(topic_prefix=sink_prefix)


@pytest.fixture(scope="module")
def sink_worker(
    database_url: str,
    sink_prefix: str,
    worker_settings: SinkSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    create_pipeline_topics(RelaySettings(topic_prefix=sink_prefix))
    directory = tmp_path_factory.mktemp("sink-worker")
    log = open(directory / "sinks.log", "ab")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "activity_pipeline.cli", "worker", "sinks"],
        env={
            **os.environ,
            "ACTIVITY_TOPIC_PREFIX": sink_prefix,
            "ACTIVITY_DATABASE_URL": database_url,
            "ACTIVITY_SINK_WEB_PORT": str(free_port()),
            "ACTIVITY_ARCHIVE_DIR": str(directory / "archive"),
            "ACTIVITY_FAUST_DATA_DIR": str(directory / "faust"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_assignment(worker_settings, worker, directory / "sinks.log")
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()


def _wait_for_assignment(
    settings: SinkSettings, worker: subprocess.Popen[bytes], log: Path
) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    group = f"{settings.topic_prefix}activity-sinks"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the sink worker exited with {worker.returncode}; see {log}")
        try:
            description = admin.describe_consumer_groups([group])[group].result()
            members = description.members
            if members and all(m.assignment.topic_partitions for m in members):
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"the sink worker did not join {group} within {READY_TIMEOUT_S:.0f} s; see {log}"
    )


def _produce(settings: SinkSettings, deliveries: list[Delivery]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for delivery in deliveries:
        producer.produce(
            settings.topic(DELIVERIES_TOPIC),
            key=f"{delivery.event.tenant_id}:{delivery.event.resource.id}".encode(),
            value=delivery.model_dump_json().encode(),
        )
    producer.flush(10)


def _poll(tail: TopicTail) -> bool:
    tail.poll()
    return True


def _receipt_ids(tail: TopicTail) -> set[UUID]:
    tail.poll()
    return {DeliveryReceipt.model_validate_json(value).event_id for _, value, _ in tail.records}


@pytest.mark.usefixtures("sink_worker")
async def test_invalid_channel_dead_lettered_stream_continues(
    worker_settings: SinkSettings,
) -> None:
    bootstrap = worker_settings.kafka_bootstrap_servers
    dead_letters = TopicTail(bootstrap, worker_settings.topic(DEAD_LETTER_TOPIC))
    receipts = TopicTail(bootstrap, worker_settings.topic(RECEIPTS_TOPIC))
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    poison = make_delivery(tenant, [], ("nowhere:channel",))
    later = [make_delivery(tenant, [alice]) for _ in range(3)]

    _produce(worker_settings, [poison, *later])
    delivered = await eventually(lambda: len(inbox.received) == 3, WAIT_S)
    dead_lettered = await eventually(
        lambda: _poll(dead_letters) and bool(dead_letters.records), WAIT_S
    )
    receipted = await eventually(
        lambda: {d.event.event_id for d in later} <= _receipt_ids(receipts), WAIT_S
    )
    await inbox.stop()
    dead_letters.close()
    receipts.close()

    assert delivered and dead_lettered and receipted
    [(_, value, headers)] = dead_letters.records
    assert Delivery.model_validate_json(value).event.event_id == poison.event.event_id
    assert b"102 unknown channel" in headers["dead_letter_reason"]
    assert headers["dead_letter_kind"] == b"permanent"
    assert headers["dead_letter_source"].startswith(
        worker_settings.topic(DELIVERIES_TOPIC).encode()
    )


@pytest.mark.usefixtures("sink_worker")
async def test_replayed_dead_letter_is_delivered(
    worker_settings: SinkSettings,
) -> None:
    tenant, alice = uuid4(), uuid4()
    inbox = InboxClient(tenant, alice)
    await inbox.start()
    delivery = make_delivery(tenant, [alice])
    producer = Producer({"bootstrap.servers": worker_settings.kafka_bootstrap_servers})
    written_at = time.time()
    producer.produce(
        worker_settings.topic(DEAD_LETTER_TOPIC),
        key=b"k",
        value=delivery.model_dump_json().encode(),
        headers={
            "dead_letter_reason": b"centrifugo unavailable",
            "dead_letter_source": f"{worker_settings.topic(DELIVERIES_TOPIC)}:0".encode(),
        },
    )
    producer.flush(10)

    replayed, _ = replay_dead_letters(
        worker_settings, since=datetime.fromtimestamp(written_at - 1, UTC)
    )
    delivered = await eventually(lambda: bool(inbox.received), WAIT_S)
    await inbox.stop()

    assert replayed >= 1
    assert delivered
    assert inbox.received == {str(delivery.event.event_id): 1}
