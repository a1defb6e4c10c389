"""Per-partition lanes of the publishing agent in a real sink worker, with a stalled partition.

The worker of this module runs `tests.sinks.stalling_worker`: the real sink
worker, except that a fake wraps its Centrifugo publisher to hang the
broadcasts of a chosen tenant until the test releases them. Everything else
(Kafka, Centrifugo, PostgreSQL, offsets and rebalances) is real. The stalled
tenant's deliveries go to partition 0, the others' to partition 1. Batches
hold `BATCH_SIZE` deliveries, so that a few stalled deliveries fill a lane
and pause its partition. A stalled shared batch is split after
`STALLING_SPLIT_AFTER_S`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from activity_pipeline.workers import create_pipeline_topics
from activity_producer.relay import RelaySettings
from activity_schemas import Delivery, DeliveryReceipt
from activity_schemas.topics import DELIVERIES_TOPIC, RECEIPTS_TOPIC
from activity_sinks.settings import SinkSettings
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.conftest import eventually, wait_until
from tests.sinks.stalling_worker import STALL_SUFFIX, STALLED_SUFFIX
from tests.sinks.support import WAIT_S, InboxClient, free_port, make_delivery
from tests.sinks.test_publishing_agent import TopicTail

READY_TIMEOUT_S = 120.0
"""How long a sink worker may take to join its consumer group on a busy machine."""

STOP_TIMEOUT_S = 30.0
"""How long a worker may take to stop after SIGTERM before it is killed, in seconds."""

BATCH_SIZE = 2
"""Deliveries per batch in these workers: a lane pauses its partition at two batches queued."""

STALLED_PARTITION = 0
FREE_PARTITION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StallingWorkers:
    """Starts stalling sink workers of this module and stalls or releases tenants."""

    settings: SinkSettings
    database_url: str
    directory: Path
    admin: AdminClient = field(init=False)
    web_ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.admin = AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap_servers})

    @property
    def stall_dir(self) -> Path:
        return self.directory / "stalls"

    @property
    def group(self) -> str:
        return f"{self.settings.topic_prefix}activity-sinks"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        self.web_ports[name] = free_port()
        log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        return subprocess.Popen(
            [sys.executable, "-m", "tests.sinks.stalling_worker", str(self.stall_dir)],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "ACTIVITY_TOPIC_PREFIX": self.settings.topic_prefix,
                "ACTIVITY_DATABASE_URL": self.database_url,
                "ACTIVITY_SINK_WEB_PORT": str(self.web_ports[name]),
                "ACTIVITY_SINK_BATCH_SIZE": str(BATCH_SIZE),
                "ACTIVITY_ARCHIVE_DIR": str(self.directory / "archive"),
                "ACTIVITY_FAUST_DATA_DIR": str(self.directory / f"faust-{name}"),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stall(self, tenant: UUID) -> None:
        (self.stall_dir / f"{tenant}{STALL_SUFFIX}").touch()

    def release(self, tenant: UUID) -> None:
        (self.stall_dir / f"{tenant}{STALL_SUFFIX}").unlink(missing_ok=True)

    def is_stalled(self, tenant: UUID) -> bool:
        return (self.stall_dir / f"{tenant}{STALLED_SUFFIX}").exists()

    def pauses(self, name: str, partition: int) -> float:
        """Return how often the worker paused a deliveries partition, from its /metrics."""
        url = f"http://127.0.0.1:{self.web_ports[name]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("activity_sink_partition_pauses_total{")
            and f'partition="{partition}"' in line
        )

    def splits(self, name: str) -> float:
        """Return how many shared batches the worker split, from its /metrics."""
        url = f"http://127.0.0.1:{self.web_ports[name]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            lines = response.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("activity_sink_shared_batch_splits_total ")
        )

    def members_with_partitions(self) -> int:
        """Return the members of the stable group, each holding partitions; 0 otherwise."""
        try:
            description = self.admin.describe_consumer_groups([self.group], request_timeout=10)[
                self.group
            ].result()
        except Exception:
            return 0
        members = description.members
        if description.state != ConsumerGroupState.STABLE or not members:
            return 0
        if not all(m.assignment.topic_partitions for m in members):
            return 0
        return len(members)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


@pytest.fixture(scope="module")
def worker_settings() -> SinkSettings:
    return SinkSettings(topic_prefix=f"{os.environ['ACTIVITY_TOPIC_PREFIX']}lanes.")


@pytest.fixture(scope="module")
def workers(
    database_url: str, worker_settings: SinkSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StallingWorkers]:
    create_pipeline_topics(RelaySettings(topic_prefix=worker_settings.topic_prefix))
    fleet = StallingWorkers(worker_settings, database_url, tmp_path_factory.mktemp("lanes"))
    fleet.stall_dir.mkdir()
    worker = fleet.start("sinks-1")
    try:
        joined = wait_until(
            lambda: worker.poll() is None and fleet.members_with_partitions() == 1,
            READY_TIMEOUT_S,
            step_s=0.5,
        )
        if not joined:
            raise RuntimeError(
                f"the stalling sink worker did not join {fleet.group} within "
                f"{READY_TIMEOUT_S:.0f} s; see {fleet.directory / 'sinks-1.log'}"
            )
        yield fleet
    finally:
        _stop(worker)


@pytest.fixture
def receipts(worker_settings: SinkSettings) -> Iterator[TopicTail]:
    tail = TopicTail(worker_settings.kafka_bootstrap_servers, worker_settings.topic(RECEIPTS_TOPIC))
    yield tail
    tail.close()


def _produce(settings: SinkSettings, deliveries: list[Delivery], partition: int) -> None:
    _produce_to(settings, [(delivery, partition) for delivery in deliveries])


def _produce_to(settings: SinkSettings, placed: list[tuple[Delivery, int]]) -> None:
    """Produce each delivery to its partition, all in one flush."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    for delivery, partition in placed:
        producer.produce(
            settings.topic(DELIVERIES_TOPIC),
            key=f"{delivery.event.tenant_id}:{delivery.event.resource.id}".encode(),
            value=delivery.model_dump_json().encode(),
            partition=partition,
        )
    producer.flush(10)


def _receipt_ids(tail: TopicTail) -> list[UUID]:
    """Return the event ids of every receipt read so far, in the order read."""
    tail.poll()
    return [DeliveryReceipt.model_validate_json(value).event_id for _, value, _ in tail.records]


def _end_offset(settings: SinkSettings, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "x"})
    try:
        tp = TopicPartition(settings.topic(DELIVERIES_TOPIC), partition)
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        return int(high)
    finally:
        consumer.close()


def _committed(settings: SinkSettings, group: str, partition: int) -> int:
    """Return the group's committed offset of a deliveries partition; negative when none."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": group})
    try:
        tp = TopicPartition(settings.topic(DELIVERIES_TOPIC), partition)
        [committed] = consumer.committed([tp], timeout=10)
        return int(committed.offset)
    finally:
        consumer.close()


async def test_other_partitions_flow_with_fake_stalled_partition(
    workers: StallingWorkers, worker_settings: SinkSettings, receipts: TopicTail
) -> None:
    stalled_tenant, free_tenant = uuid4(), uuid4()
    alice, bob = uuid4(), uuid4()
    alice_inbox, bob_inbox = InboxClient(stalled_tenant, alice), InboxClient(free_tenant, bob)
    await alice_inbox.start()
    await bob_inbox.start()
    resource = uuid4()
    stalled = [make_delivery(stalled_tenant, [alice], resource_id=resource) for _ in range(8)]
    free = [make_delivery(free_tenant, [bob]) for _ in range(5)]
    stalled_ids = [d.event.event_id for d in stalled]
    free_ids = {d.event.event_id for d in free}
    workers.stall(stalled_tenant)

    try:
        _produce(worker_settings, stalled, STALLED_PARTITION)
        engaged = await eventually(lambda: workers.is_stalled(stalled_tenant), WAIT_S)
        _produce(worker_settings, free, FREE_PARTITION)
        free_receipted = await eventually(lambda: free_ids <= set(_receipt_ids(receipts)), WAIT_S)
        free_delivered = await eventually(lambda: len(bob_inbox.received) == len(free), WAIT_S)
        receipted_while_stalled = set(stalled_ids) & set(_receipt_ids(receipts))
        received_while_stalled = dict(alice_inbox.received)
    finally:
        workers.release(stalled_tenant)
    stalled_receipted = await eventually(
        lambda: set(stalled_ids) <= set(_receipt_ids(receipts)), WAIT_S
    )
    stalled_delivered = await eventually(lambda: len(alice_inbox.received) == len(stalled), WAIT_S)
    await alice_inbox.stop()
    await bob_inbox.stop()

    assert engaged, "the fake never stalled the tenant's broadcast"
    assert free_receipted
    assert free_delivered
    assert receipted_while_stalled == set()
    assert received_while_stalled == {}
    assert stalled_receipted
    assert stalled_delivered
    assert [i for i in _receipt_ids(receipts) if i in set(stalled_ids)] == stalled_ids
    assert alice_inbox.received == {str(i): 1 for i in stalled_ids}
    assert workers.pauses("sinks-1", STALLED_PARTITION) >= 1
    assert bob_inbox.received == {str(i): 1 for i in free_ids}


async def test_shared_batch_is_split_with_fake_stalled_partition(
    workers: StallingWorkers, worker_settings: SinkSettings, receipts: TopicTail
) -> None:
    stalled_tenant, free_tenant = uuid4(), uuid4()
    stalled = make_delivery(stalled_tenant, [uuid4()])
    free = make_delivery(free_tenant, [uuid4()])
    splits_before = workers.splits("sinks-1")
    workers.stall(stalled_tenant)

    try:
        _produce_to(worker_settings, [(stalled, STALLED_PARTITION), (free, FREE_PARTITION)])
        engaged = await eventually(lambda: workers.is_stalled(stalled_tenant), WAIT_S)
        free_receipted = await eventually(
            lambda: free.event.event_id in _receipt_ids(receipts), WAIT_S
        )
        stalled_receipted_while_stalled = stalled.event.event_id in _receipt_ids(receipts)
        splits_while_stalled = workers.splits("sinks-1")
    finally:
        workers.release(stalled_tenant)
    stalled_receipted = await eventually(
        lambda: stalled.event.event_id in _receipt_ids(receipts), WAIT_S
    )

    assert engaged, "the fake never stalled the tenant's broadcast"
    assert free_receipted, "the free partition's delivery waited for the stalled partition"
    assert not stalled_receipted_while_stalled
    assert splits_while_stalled >= splits_before + 1
    assert stalled_receipted
    assert _receipt_ids(receipts).count(free.event.event_id) == 1


async def test_commit_stops_at_unprocessed_with_fake_stalled_partition(
    workers: StallingWorkers, worker_settings: SinkSettings, receipts: TopicTail
) -> None:
    stalled_tenant, free_tenant = uuid4(), uuid4()
    stalled = [make_delivery(stalled_tenant, [uuid4()]) for _ in range(3)]
    free = [make_delivery(free_tenant, [uuid4()]) for _ in range(3)]
    first_stalled_offset = _end_offset(worker_settings, STALLED_PARTITION)
    workers.stall(stalled_tenant)

    try:
        _produce(worker_settings, stalled, STALLED_PARTITION)
        engaged = await eventually(lambda: workers.is_stalled(stalled_tenant), WAIT_S)
        _produce(worker_settings, free, FREE_PARTITION)
        free_end = _end_offset(worker_settings, FREE_PARTITION)
        free_committed = await eventually(
            lambda: _committed(worker_settings, workers.group, FREE_PARTITION) == free_end, WAIT_S
        )
        committed_while_stalled = _committed(worker_settings, workers.group, STALLED_PARTITION)
    finally:
        workers.release(stalled_tenant)
    stalled_committed = await eventually(
        lambda: (
            _committed(worker_settings, workers.group, STALLED_PARTITION)
            == first_stalled_offset + len(stalled)
        ),
        WAIT_S,
    )

    assert engaged, "the fake never stalled the tenant's broadcast"
    assert free_committed, "the free partition's offsets were not committed"
    assert committed_while_stalled <= first_stalled_offset
    assert stalled_committed, "the stalled partition's offsets were not committed after release"
    assert {d.event.event_id for d in stalled + free} <= set(_receipt_ids(receipts))


async def test_second_worker_joins_with_fake_stalled_partition(
    workers: StallingWorkers, worker_settings: SinkSettings, receipts: TopicTail
) -> None:
    stalled_tenant, free_tenant = uuid4(), uuid4()
    stalled = [make_delivery(stalled_tenant, [uuid4()]) for _ in range(3)]
    free = [make_delivery(free_tenant, [uuid4()]) for _ in range(3)]
    expected = {d.event.event_id for d in stalled + free}
    workers.stall(stalled_tenant)
    second = None

    try:
        _produce(worker_settings, stalled, STALLED_PARTITION)
        engaged = await eventually(lambda: workers.is_stalled(stalled_tenant), WAIT_S)
        second = workers.start("sinks-2")
        split = wait_until(lambda: workers.members_with_partitions() == 2, READY_TIMEOUT_S, 0.5)
        _produce(worker_settings, free, FREE_PARTITION)
        free_receipted = await eventually(
            lambda: {d.event.event_id for d in free} <= set(_receipt_ids(receipts)), WAIT_S
        )
    finally:
        workers.release(stalled_tenant)
    all_receipted = await eventually(lambda: expected <= set(_receipt_ids(receipts)), WAIT_S)
    if second is not None:
        _stop(second)
    back_to_one = wait_until(lambda: workers.members_with_partitions() == 1, READY_TIMEOUT_S, 0.5)

    assert engaged, "the fake never stalled the tenant's broadcast"
    assert split, "the group did not rebalance onto two workers while a partition stalled"
    assert free_receipted
    assert all_receipted, f"missing receipts: {expected - set(_receipt_ids(receipts))}"
    assert back_to_one
