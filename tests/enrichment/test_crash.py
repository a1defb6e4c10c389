"""A worker killed mid-batch: on restart nothing is skipped and no recipient is doubled.

The test runs its own enrichment worker under a topic prefix of its own,
fills the events topic directly, kills the worker with SIGKILL once the first
deliveries appear, and starts it again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest
from activity_pipeline.workers import create_pipeline_topics
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEvent, ActorKind, ActorRef, ResourceRef, Visibility
from activity_schemas.topics import DELIVERIES_TOPIC, EVENTS_TOPIC
from confluent_kafka import Producer

from tests.enrichment.conftest import TopicRecords, World, eventually_async

EVENTS = 3_000
"""Activities produced; enough for several batches of BATCH_SIZE."""

BATCH_SIZE = 50
"""The worker's batch size here: small, so that the kill lands between and inside batches."""

CATCH_UP_TIMEOUT_S = 120.0
"""How long the restarted worker may take to deliver every activity (shared, slow machine)."""

STOP_TIMEOUT_S = 20.0
"""How long the worker may take to stop after SIGTERM."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Worker:
    """One `activity worker enrichment` child process."""

    def __init__(self, environment: dict[str, str], log: Path) -> None:
        self._environment = {**os.environ, **environment}
        self._log = log
        self._child: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self._log, "ab") as output:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "activity_pipeline.cli", "worker", "enrichment"],
                env=self._environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self._child is not None:
            self._child.send_signal(signal.SIGKILL)
            self._child.wait()

    def stop(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            try:
                self._child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def crash_prefix(relay_settings: RelaySettings) -> str:
    # Under the session's prefix, so that the session deletes these topics too.
    prefix = f"{relay_settings.topic_prefix}crash-{uuid4().hex[:6]}."
    create_pipeline_topics(relay_settings.model_copy(update={"topic_prefix": prefix}))
    return prefix


@pytest.fixture
def worker(
    crash_prefix: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    directory = tmp_path_factory.mktemp("crash")
    worker = Worker(
        {
            "ACTIVITY_TOPIC_PREFIX": crash_prefix,
            "ACTIVITY_DATABASE_URL": database_url,
            "ACTIVITY_ENRICHMENT_WEB_PORT": str(_free_port()),
            "ACTIVITY_ENRICHMENT_BATCH_SIZE": str(BATCH_SIZE),
            "ACTIVITY_FAUST_DATA_DIR": str(directory / "faust"),
            # The killed member's partitions wait this long before the restart gets them.
            "ACTIVITY_KAFKA_SESSION_TIMEOUT_S": "10",
        },
        directory / "enrichment.log",
    )
    yield worker
    worker.stop()


def _events(world: World, documents: list[UUID], actor: UUID) -> list[ActivityEvent]:
    now = datetime.now(UTC)
    return [
        ActivityEvent(
            event_id=uuid4(),
            tenant_id=world.tenant,
            time=now,
            recorded_at=now,
            correlation_id=uuid4(),
            actor=ActorRef(id=actor, kind=ActorKind.USER),
            resource=ResourceRef(id=documents[index % len(documents)], type="document"),
            action="resource.updated",
            visibility=Visibility.RESOURCE,
            payload={"n": index},
            targets=("inbox", "resource"),
        )
        for index in range(EVENTS)
    ]


async def test_killed_worker_skips_nothing_and_doubles_no_recipient(
    pool: asyncpg.Pool,
    world: World,
    worker: Worker,
    crash_prefix: str,
    relay_settings: RelaySettings,
) -> None:
    owner, actor, delegators = uuid4(), uuid4(), [uuid4(), uuid4()]
    folder = await world.resource(owner=owner, kind="folder")
    documents = [await world.resource(folder, owner) for _ in range(12)]
    for delegator in delegators:
        await world.grant(delegator, folder, "delegator")
    events = _events(world, documents, actor)
    producer = Producer({"bootstrap.servers": relay_settings.kafka_bootstrap_servers})
    for event in events:
        producer.produce(
            crash_prefix + EVENTS_TOPIC,
            key=f"{event.tenant_id}:{event.resource.id}".encode(),
            value=event.model_dump_json().encode(),
        )
    producer.flush(30)
    deliveries = TopicRecords(
        relay_settings.kafka_bootstrap_servers, crash_prefix + DELIVERIES_TOPIC
    )

    worker.start()
    started = await eventually_async(lambda: len(deliveries.snapshot()) > 0, CATCH_UP_TIMEOUT_S)
    worker.kill()
    delivered_before_kill = len(deliveries.snapshot())
    worker.start()
    expected = {str(event.event_id) for event in events}
    caught_up = await eventually_async(
        lambda: (
            {json.loads(r.value)["event"]["event_id"] for r in deliveries.snapshot()} >= expected
        ),
        CATCH_UP_TIMEOUT_S,
        step_s=1.0,
    )
    worker.stop()
    deliveries.stop()

    copies: dict[str, list[list[str]]] = defaultdict(list)
    for record in deliveries.snapshot():
        value = json.loads(record.value)
        copies[value["event"]["event_id"]].append([r["principal_id"] for r in value["recipients"]])
    assert started and caught_up
    assert delivered_before_kill < EVENTS, "the kill must land before the worker finished"
    assert set(copies) == expected
    expected_recipients = sorted(str(p) for p in (owner, *delegators))
    for event_id, versions in copies.items():
        for recipients in versions:
            assert sorted(recipients) == expected_recipients, event_id
