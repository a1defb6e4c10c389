"""The archive sink on real Kafka: a crash before the offset commit, and a replay from the start.

The sink worker runs as a child process (`activity worker sinks`) on topics of
its own. The tests produce audit records to its audit topic with
confluent-kafka and read the archive that the worker writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import jsonschema_rs
import pytest
from activity_pipeline.cli import app
from activity_pipeline.workers import create_pipeline_topics
from activity_producer.relay import RelaySettings
from activity_schemas.topics import AUDIT_TOPIC
from activity_sinks.archive import ArchiveStore, iter_archive, iter_entries
from activity_sinks.verify import verify_tenant
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from tests.archive.records import audit_record, raw_key_base64
from tests.conftest import wait_until

ARCHIVE_TIMEOUT_S = 120.0
"""How long the worker may take to start and archive a wave of records, in seconds."""

STOP_TIMEOUT_S = 30.0
"""How long the worker may take to stop after SIGTERM, in seconds."""

SINK_GROUP = "activity-sinks"

SCHEMA_PATH = "schemas/json/activity.audit.schema.json"

FAST_GROUP_ENVIRONMENT = {
    "BROKER_SESSION_TIMEOUT": "10",
    "BROKER_REBALANCE_TIMEOUT": "10",
    "BROKER_HEARTBEAT_INTERVAL": "1",
}
"""Faust settings of the child worker, in seconds: the broker drops a SIGKILLed member after
10 s instead of Faust's default 60 s, so the restarted worker gets its partitions sooner."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SinkWorker:
    """One `activity worker sinks` child process at a time, on this module's topics."""

    def __init__(self, environment: dict[str, str], logs: Path) -> None:
        self.environment = environment
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, batch_size: int) -> None:
        self.starts += 1
        log = open(self.logs / f"sinks-{self.starts}.log", "wb")  # noqa: SIM115 - child keeps it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "activity_pipeline.cli", "worker", "sinks"],
            env={
                **os.environ,
                **self.environment,
                **FAST_GROUP_ENVIRONMENT,
                "ACTIVITY_SINK_BATCH_SIZE": str(batch_size),
                "ACTIVITY_SINK_WEB_PORT": str(_free_port()),
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, so offsets not yet committed stay uncommitted."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class SinkSetup:
    """The topics, archive, key and worker of this module."""

    def __init__(self, relay_settings: RelaySettings, database_url: str, root: Path) -> None:
        self.prefix = f"{relay_settings.topic_prefix}archive-{uuid4().hex[:6]}."
        self.settings = relay_settings.model_copy(update={"topic_prefix": self.prefix})
        self.bootstrap = relay_settings.kafka_bootstrap_servers
        self.audit_topic = self.prefix + AUDIT_TOPIC
        self.group = self.prefix + SINK_GROUP
        self.archive_dir = root / "archive"
        self.key = Ed25519PrivateKey.generate()
        self.tenants = [uuid4() for _ in range(3)]
        self.produced: list[UUID] = []
        self.environment = {
            "ACTIVITY_TOPIC_PREFIX": self.prefix,
            "ACTIVITY_ARCHIVE_DIR": str(self.archive_dir),
            "ACTIVITY_DATABASE_URL": database_url,
            "ACTIVITY_ARCHIVE_SIGNING_KEY": raw_key_base64(self.key),
            "ACTIVITY_FAUST_DATA_DIR": str(root / "faust"),
        }
        (root / "logs").mkdir()
        self.worker = SinkWorker(self.environment, root / "logs")
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})

    def produce(self, count: int) -> None:
        """Produce `count` audit records over this module's tenants, keyed tenant:resource."""
        for index in range(count):
            tenant = self.tenants[index % len(self.tenants)]
            record = audit_record(tenant, len(self.produced) % 20)
            self._producer.produce(
                self.audit_topic,
                key=f"{tenant}:{record.event.resource.id}".encode(),
                value=record.model_dump_json().encode(),
            )
            self.produced.append(record.event.event_id)
        self._producer.flush(30)

    def archived(self) -> list[UUID]:
        return [record.event.event_id for record in iter_archive(self.archive_dir)]

    def wait_archived(self, count: int) -> None:
        assert wait_until(lambda: len(set(self.archived())) >= count, ARCHIVE_TIMEOUT_S, 0.2), (
            f"only {len(set(self.archived()))} of {count} records archived; see {self.worker.logs}"
        )

    def archived_last_offsets(self) -> dict[int, int]:
        store = ArchiveStore(self.archive_dir)
        last: dict[int, int] = {}
        for tenant in store.tenants():
            for ref in store.segments(tenant):
                partition = ref.name.partition
                last[partition] = max(last.get(partition, -1), ref.name.last_offset)
        return last

    def committed_offsets(self) -> dict[int, int]:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            partitions = [
                TopicPartition(self.audit_topic, partition)
                for partition in range(self.settings.topic_partitions)
            ]
            return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=30)}
        finally:
            consumer.close()

    def delete_group(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})

        def deleted() -> bool:
            try:
                admin.delete_consumer_groups([self.group], request_timeout=10)[self.group].result()
            except Exception:
                return False
            return True

        assert wait_until(deleted, ARCHIVE_TIMEOUT_S, 1.0), f"could not delete group {self.group}"

    def snapshot(self) -> dict[str, str]:
        return {
            str(path.relative_to(self.archive_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(self.archive_dir.rglob("*.jsonl.gz"))
        }


@pytest.fixture(scope="module")
def sink(
    relay_settings: RelaySettings, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SinkSetup]:
    setup = SinkSetup(relay_settings, database_url, tmp_path_factory.mktemp("sink"))
    create_pipeline_topics(setup.settings)
    yield setup
    setup.worker.stop()


def test_crash_between_segment_and_offset_commit_archives_each_record_once(
    sink: SinkSetup,
) -> None:
    sink.worker.start(batch_size=5)
    sink.produce(200)
    sink.wait_archived(40)
    sink.worker.kill()
    archived_at_crash = sink.archived_last_offsets()
    committed_at_crash = sink.committed_offsets()
    sink.produce(100)

    sink.worker.start(batch_size=9)
    sink.wait_archived(300)

    uncommitted = [
        partition
        for partition, last in archived_at_crash.items()
        if last >= committed_at_crash.get(partition, -1)
    ]
    assert uncommitted, "the crash came after every archived offset was committed"
    counts = Counter(sink.archived())
    assert sorted(counts) == sorted(sink.produced)
    assert set(counts.values()) == {1}
    store = ArchiveStore(sink.archive_dir)
    for tenant in sink.tenants:
        report = verify_tenant(store, str(tenant), sink.key.public_key())
        assert report.ok, [finding.render() for finding in report.findings]


def test_replaying_the_audit_topic_from_the_start_leaves_the_archive_identical(
    sink: SinkSetup,
) -> None:
    if sink.worker.process is None:
        sink.worker.start(batch_size=9)
    sink.produce(15)
    sink.wait_archived(len(sink.produced))
    sink.worker.stop()
    before = sink.snapshot()
    sink.delete_group()

    sink.worker.start(batch_size=3)
    sink.produce(12)
    sink.wait_archived(len(sink.produced))
    sink.worker.stop()

    after = sink.snapshot()
    assert {path: after[path] for path in before} == before
    store = ArchiveStore(sink.archive_dir)
    new_records = {
        UUID(json.loads(line)["record"]["event"]["event_id"])
        for path in set(after) - set(before)
        for line in store.read_lines(path)[:-1]
    }
    assert new_records == set(sink.produced[-12:])
    counts = Counter(sink.archived())
    assert len(counts) == len(sink.produced)
    assert set(counts.values()) == {1}
    for tenant in sink.tenants:
        assert verify_tenant(store, str(tenant), sink.key.public_key()).ok


def test_audit_tail_prints_a_tenants_records_from_the_topic(sink: SinkSetup) -> None:
    tenant = sink.tenants[0]

    result = CliRunner().invoke(
        app,
        ["audit", "tail", "--tenant", str(tenant), "--from-beginning", "--max-records", "4"],
        env={"ACTIVITY_TOPIC_PREFIX": sink.prefix},
    )

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4
    assert all(f'"tenant_id": "{tenant}"' in line for line in lines)


def test_records_the_worker_archived_match_the_published_audit_schema(sink: SinkSetup) -> None:
    schema = json.loads((Path(__file__).resolve().parents[2] / SCHEMA_PATH).read_text())
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    store = ArchiveStore(sink.archive_dir)

    errors = [
        f"{archived.segment}:{archived.line}: {error}"
        for archived in iter_entries(store)
        for error in validator.iter_errors(archived.entry["record"])
    ]

    assert len(list(iter_entries(store))) >= len(sink.produced) > 0
    assert errors == []
