"""Scale-out on the real stack: two enrichment and two sink workers split the partitions.

One relay, two enrichment workers and two sink workers run as child processes
against the test database. Killing one worker of each kind with SIGKILL hands
its partitions to the other, and every activity recorded before and after the
kill reaches the receipts topic.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import psycopg
import pytest
from activity_pipeline.demo.observer import TopicReader, end_offsets
from activity_pipeline.processes import CONSUMER_GROUPS
from activity_pipeline.workers import create_pipeline_topics
from activity_producer import record_activity_with_outbox
from activity_producer.dsn import for_libpq, for_sqlalchemy_async
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEnvelope
from activity_schemas.topics import AUDIT_TOPIC, DELIVERIES_TOPIC, EVENTS_TOPIC, RECEIPTS_TOPIC
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from tests.conftest import wait_until

WAIT_TIMEOUT_S = 90.0
"""How long joining a group, taking over partitions or delivering may take on a busy machine."""

SESSION_TIMEOUT_S = "10"
"""Faust's BROKER_SESSION_TIMEOUT for the workers: a killed member leaves its group after
this many seconds instead of Faust's default 60, which keeps the test short."""

STOP_TIMEOUT_S = 20.0
"""How long a child may take to stop after SIGTERM before it is killed, in seconds."""

RESOURCES = 12
"""Resources recorded on, each its own Kafka key, so the activities spread over partitions."""

ENRICHMENT_GROUP, SINKS_GROUP = CONSUMER_GROUPS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Child:
    """One relay or worker process started for this module."""

    name: str
    process: subprocess.Popen[bytes]
    output: IO[bytes]
    web_port: int | None = None

    def get(self, path: str) -> tuple[int, bytes]:
        """Return the status and body of GET `path` on the worker's web server."""
        url = f"http://127.0.0.1:{self.web_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""


@dataclass
class Fleet:
    """The children of this module, by name, and where their logs go."""

    logs: Path
    environment: dict[str, str]
    children: dict[str, Child] = field(default_factory=dict)

    def start(self, name: str, arguments: list[str], extra: dict[str, str]) -> Child:
        output = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop_all()
        process = subprocess.Popen(
            [sys.executable, "-m", "activity_pipeline.cli", *arguments],
            env={**self.environment, **extra},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        web_port = next((int(v) for k, v in extra.items() if k.endswith("_WEB_PORT")), None)
        child = Child(name, process, output, web_port)
        self.children[name] = child
        return child

    def check_alive(self, *names: str) -> None:
        for name in names:
            child = self.children[name]
            if child.process.poll() is not None:
                raise RuntimeError(
                    f"the {name} process exited with code {child.process.returncode}; "
                    f"see {self.logs / (name + '.log')}"
                )

    def stop_all(self) -> None:
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
        for child in self.children.values():
            try:
                child.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
            child.output.close()


class Receipts:
    """Event ids seen on the receipts topic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event_ids: set[UUID] = set()

    def add(self, value: dict[str, Any]) -> None:
        with self._lock:
            self._event_ids.add(UUID(value["event_id"]))

    def missing(self, expected: set[UUID]) -> set[UUID]:
        with self._lock:
            return expected - self._event_ids


def _assignments(admin: AdminClient, group: str) -> list[set[tuple[str, int]]]:
    """Return the partitions of each member of a stable `group`; [] while it rebalances."""
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except Exception:
        return []
    if description.state != ConsumerGroupState.STABLE:
        return []
    return [
        {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    ]


def _all_partitions(admin: AdminClient, topics: list[str]) -> set[tuple[str, int]]:
    metadata = admin.list_topics(timeout=10)
    return {
        (topic, partition) for topic in topics for partition in metadata.topics[topic].partitions
    }


@pytest.fixture(scope="module")
def receipts(relay_settings: RelaySettings) -> Iterator[Receipts]:
    create_pipeline_topics(relay_settings)
    collected = Receipts()
    bootstrap = relay_settings.kafka_bootstrap_servers
    topic = relay_settings.topic_prefix + RECEIPTS_TOPIC
    reader = TopicReader(bootstrap, topic, end_offsets(bootstrap, topic), collected.add)
    reader.start()
    yield collected
    reader.stop()


@pytest.fixture(scope="module")
def fleet(
    database_url: str, receipts: Receipts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("scale-out-logs")
    state = tmp_path_factory.mktemp("scale-out-state")
    environment = {
        **os.environ,
        "ACTIVITY_DATABASE_URL": database_url,
        "ACTIVITY_ARCHIVE_DIR": str(state / "archive"),
        "BROKER_SESSION_TIMEOUT": SESSION_TIMEOUT_S,
    }
    fleet = Fleet(logs, environment)
    fleet.start("relay", ["relay"], {"ACTIVITY_RELAY_METRICS_PORT": str(_free_port())})
    for index in (1, 2):
        fleet.start(
            f"enrichment-{index}",
            ["worker", "enrichment"],
            {
                "ACTIVITY_ENRICHMENT_WEB_PORT": str(_free_port()),
                "ACTIVITY_FAUST_DATA_DIR": str(state / f"enrichment-{index}"),
            },
        )
        fleet.start(
            f"sinks-{index}",
            ["worker", "sinks"],
            {
                "ACTIVITY_SINK_WEB_PORT": str(_free_port()),
                "ACTIVITY_FAUST_DATA_DIR": str(state / f"sinks-{index}"),
            },
        )
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _reference_data(database_url: str) -> tuple[UUID, UUID, list[UUID]]:
    """Create a tenant with RESOURCES documents owned by one principal."""
    tenant, owner = uuid4(), uuid4()
    resources = [uuid4() for _ in range(RESOURCES)]
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        for resource in resources:
            conn.execute(
                "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id)"
                " VALUES (%s, %s, 'document', NULL, %s)",
                (tenant, resource, owner),
            )
    return tenant, owner, resources


async def _record(database_url: str, tenant: UUID, resources: list[UUID]) -> set[UUID]:
    """Commit one activity by a fresh actor on each resource; return their event ids."""
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    event_ids = set()
    try:
        for resource in resources:
            envelope = ActivityEnvelope(
                tenant_id=tenant,
                actor_principal_id=uuid4(),
                resource_id=resource,
                resource_type="document",
                action="resource.updated",
                payload={"title": "Scale-out plan"},
            )
            async with AsyncSession(engine) as session, session.begin():
                event_ids.add((await record_activity_with_outbox(session, envelope)).event_id)
    finally:
        await engine.dispose()
    return event_ids


def _assigned_in_metrics(child: Child) -> float:
    """Return the sum of `activity_worker_assigned_partitions` on the worker's /metrics."""
    status, body = child.get("/metrics")
    if status != 200:
        return -1.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("activity_worker_assigned_partitions{")
    )


def _split_between_two(
    assignments: list[set[tuple[str, int]]], every: set[tuple[str, int]]
) -> bool:
    return (
        len(assignments) == 2
        and all(assignments)
        and not assignments[0] & assignments[1]
        and assignments[0] | assignments[1] == every
    )


def _held_by_one(assignments: list[set[tuple[str, int]]], every: set[tuple[str, int]]) -> bool:
    return len(assignments) == 1 and assignments[0] == every


async def test_killed_workers_hand_over_losslessly(
    fleet: Fleet, receipts: Receipts, database_url: str, relay_settings: RelaySettings
) -> None:
    prefix = relay_settings.topic_prefix
    admin = AdminClient({"bootstrap.servers": relay_settings.kafka_bootstrap_servers})
    enrichment_group, sinks_group = prefix + ENRICHMENT_GROUP, prefix + SINKS_GROUP
    enrichment_partitions = _all_partitions(admin, [prefix + EVENTS_TOPIC])
    sinks_partitions = _all_partitions(admin, [prefix + DELIVERIES_TOPIC, prefix + AUDIT_TOPIC])
    tenant, _, resources = _reference_data(database_url)
    names = ("relay", "enrichment-1", "enrichment-2", "sinks-1", "sinks-2")

    def split() -> bool:
        fleet.check_alive(*names)
        return _split_between_two(
            _assignments(admin, enrichment_group), enrichment_partitions
        ) and _split_between_two(_assignments(admin, sinks_group), sinks_partitions)

    assert wait_until(split, WAIT_TIMEOUT_S, step_s=0.5), "the workers did not split partitions"
    all_ready = wait_until(
        lambda: all(fleet.children[name].get("/ready")[0] == 200 for name in names[1:]),
        WAIT_TIMEOUT_S,
        step_s=0.5,
    )
    before = await _record(database_url, tenant, resources)
    delivered_before = wait_until(lambda: not receipts.missing(before), WAIT_TIMEOUT_S, 0.5)

    fleet.children["enrichment-1"].process.send_signal(signal.SIGKILL)
    fleet.children["sinks-2"].process.send_signal(signal.SIGKILL)
    after = await _record(database_url, tenant, resources)
    survivors = ("relay", "enrichment-2", "sinks-1")

    def taken_over() -> bool:
        fleet.check_alive(*survivors)
        return _held_by_one(
            _assignments(admin, enrichment_group), enrichment_partitions
        ) and _held_by_one(_assignments(admin, sinks_group), sinks_partitions)

    took_over = wait_until(taken_over, WAIT_TIMEOUT_S, step_s=0.5)
    delivered = wait_until(lambda: not receipts.missing(before | after), WAIT_TIMEOUT_S, step_s=0.5)
    metrics_agree = wait_until(
        lambda: _assigned_in_metrics(fleet.children["sinks-1"]) == len(sinks_partitions),
        WAIT_TIMEOUT_S,
        step_s=0.5,
    )

    assert all_ready, "not every worker answered 200 on /ready"
    assert delivered_before, f"lost {len(receipts.missing(before))} activities before the kill"
    assert took_over, "the surviving workers did not take over the killed workers' partitions"
    assert delivered, f"lost {len(receipts.missing(before | after))} activities"
    assert len(before | after) == 2 * RESOURCES
    assert metrics_agree, "the surviving sink worker's /metrics does not count every partition"


def test_worker_health_answers_json_with_its_state(fleet: Fleet) -> None:
    child = fleet.children["enrichment-2"]
    wait_until(lambda: child.get("/ready")[0] == 200, WAIT_TIMEOUT_S, step_s=0.5)

    status, body = child.get("/health")

    assert status == 200
    assert json.loads(body) == {"status": "alive", "state": "ready"}


def test_worker_readiness_counts_its_partitions(fleet: Fleet) -> None:
    child = fleet.children["sinks-1"]
    wait_until(lambda: child.get("/ready")[0] == 200, WAIT_TIMEOUT_S, step_s=0.5)

    status, body = child.get("/ready")

    assert status == 200
    assert json.loads(body)["assigned_partitions"] >= 1
