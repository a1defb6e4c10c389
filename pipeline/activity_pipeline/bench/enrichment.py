"""Benchmark of the enrichment step on the real input's fan-out: batched against per-activity.

Both designs run in one process against the same PostgreSQL database, which
holds the reference data that one day of Wikipedia edits implies:

- batched: what the enrichment agent does per batch: decode the event
  documents, invalidate and load reference data with set-based queries (cached
  between batches), apply the rules, serialize the delivery and audit records;
- per-activity: the replaced worker's way: one query per ancestor, one per
  resource for subscriptions and for bindings, one per watcher for its
  preference, then the same rules and serialization.

Kafka is not involved; the figures are the CPU and database cost of one
worker's enrichment. The ratio of the two rates is measured in the same run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEnvelope, ActivityEvent, AuditRecord
from activity_schemas.event import event_from_envelope
from activity_schemas.topics import DELIVERIES_TOPIC, EVENTS_TOPIC
from activity_streams.preferences import FilterMode, Preference
from activity_streams.reference import ChainNode, ReferenceSnapshot, ReferenceStore
from activity_streams.resolution import BatchResolver, HeapPolicy, Unresolvable
from activity_streams.settings import StreamsSettings
from activity_streams.watchers import Rules, resolve
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from activity_pipeline.demo.loader import drop_database, load_reference_data, recreate_database
from activity_pipeline.demo.wikiticker import (
    DATA_FILE,
    build_reference_data,
    edit_envelope,
    read_edits,
)
from activity_pipeline.workers import create_pipeline_topics, delete_pipeline_topics

__all__ = ["EnrichmentBenchResult", "event_of", "measure_through_faust", "run_enrichment_bench"]

DEFAULT_BATCH_SIZE = 500
"""Activities per batch: the enrichment worker's default `enrichment_batch_size`."""

PER_ACTIVITY_SAMPLE = 2_000
"""Activities resolved the per-activity way; it issues about ten queries each, so a sample."""

CACHE_TTL_S = 3600.0
"""Cache lifetime in the benchmark: longer than a run, so only invalidations empty it."""

TARGET_PER_S = 10_000
"""Activities per second one worker must resolve."""


def event_of(envelope: ActivityEnvelope) -> ActivityEvent:
    """Return the event document the relay would produce for `envelope`."""
    return event_from_envelope(
        envelope, event_id=uuid4(), recorded_at=datetime.now(UTC), payload=envelope.payload
    )


@dataclass(frozen=True)
class EnrichmentBenchResult:
    """Figures of one run."""

    activities: int
    batched_s: float
    batched_queries: int
    recipients: int
    per_activity_sample: int
    per_activity_s: float
    per_activity_queries: int
    identical: bool
    batch_size: int = DEFAULT_BATCH_SIZE
    through_faust_per_s: float | None = None
    idle_agent_per_s: float | None = None

    @property
    def batched_per_s(self) -> float:
        return self.activities / self.batched_s

    @property
    def per_activity_per_s(self) -> float:
        return self.per_activity_sample / self.per_activity_s

    def render(self) -> str:
        """Return the figures as lines of text."""
        ratio = self.batched_per_s / self.per_activity_per_s
        judged, judged_by = self.batched_per_s, "in-process"
        if self.through_faust_per_s is not None:
            judged, judged_by = self.through_faust_per_s, "through one Faust worker"
        verdict = "met" if judged >= TARGET_PER_S else "NOT met"
        return "\n".join(
            [
                "enrichment benchmark (in-process: decode, resolve, serialize; no Kafka)",
                f"  activities:              {self.activities:,}"
                f" ({self.recipients:,} recipients, "
                f"{self.recipients / self.activities:.2f} per activity)",
                f"  batched, cached:         {self.batched_per_s:,.0f} activities/s"
                f" ({self.batched_s:.2f} s, {self.batched_queries:,} queries,"
                f" batch {self.batch_size})",
                f"  per-activity queries:    {self.per_activity_per_s:,.0f} activities/s"
                f" ({self.per_activity_sample:,} activities in {self.per_activity_s:.2f} s,"
                f" {self.per_activity_queries:,} queries)",
                f"  ratio batched/per-activity: {ratio:,.1f}x",
                *self._through_faust_lines(),
                f"  same recipients and reasons on the sample: {'yes' if self.identical else 'NO'}",
                f"  target {TARGET_PER_S:,} activities/s per worker ({judged_by}): {verdict}",
            ]
        )

    def _through_faust_lines(self) -> list[str]:
        if self.through_faust_per_s is None or self.idle_agent_per_s is None:
            return []
        share = self.through_faust_per_s / self.idle_agent_per_s
        return [
            "  backlog drained by one Faust worker (Kafka in and out, cold cache): "
            f"{self.through_faust_per_s:,.0f} activities/s",
            "  same path, agent that does nothing (Faust's own ceiling): "
            f"{self.idle_agent_per_s:,.0f} activities/s",
            f"  enrichment worker / idle agent: {share:.2f}",
        ]


class _PerActivityLoader:
    """The replaced worker's lookups: one query per ancestor, per resource and per watcher."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.queries = 0

    async def _fetch(self, query: str, *arguments: object) -> list[asyncpg.Record]:
        self.queries += 1
        rows: list[asyncpg.Record] = await self._conn.fetch(query, *arguments)
        return rows

    async def snapshot(self, event: ActivityEvent) -> ReferenceSnapshot:
        tenant_id = event.tenant_id
        snapshot = ReferenceSnapshot()
        nodes: list[ChainNode] = []
        current: UUID | None = event.resource.id
        while current is not None and len(nodes) < 64:
            rows = await self._fetch(
                "SELECT parent_id, owner_principal_id FROM resources"
                " WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                current,
            )
            if not rows:
                break
            nodes.append(ChainNode(current, rows[0]["owner_principal_id"], len(nodes)))
            current = rows[0]["parent_id"]
        snapshot.chains[(tenant_id, event.resource.id)] = nodes

        watchers: set[UUID] = set()
        for node in snapshot.chain(tenant_id, event.resource.id):
            key = (tenant_id, node.resource_id)
            for row in await self._fetch(
                "SELECT principal_id, scope FROM subscriptions"
                " WHERE tenant_id = $1 AND resource_id = $2 AND revoked_at IS NULL",
                *key,
            ):
                snapshot.subscriptions[key].append((row["principal_id"], row["scope"]))
                watchers.add(row["principal_id"])
            for row in await self._fetch(
                "SELECT principal_id, role FROM role_bindings"
                " WHERE tenant_id = $1 AND resource_id = $2 AND revoked_at IS NULL",
                *key,
            ):
                snapshot.role_bindings[key].append((row["principal_id"], row["role"]))
            watchers.update(p for p, _ in snapshot.watching_bindings(*key))
            if node.depth == 0 and node.owner_principal_id is not None:
                watchers.add(node.owner_principal_id)

        for principal in watchers:
            rows = await self._fetch(
                "SELECT filter_mode, custom_actions FROM notification_preferences"
                " WHERE tenant_id = $1 AND principal_id = $2",
                tenant_id,
                principal,
            )
            if rows:
                snapshot.preferences[(tenant_id, principal)] = Preference(
                    FilterMode(rows[0]["filter_mode"]), tuple(rows[0]["custom_actions"])
                )
        rows = await self._fetch(
            "SELECT filter_mode, custom_actions FROM tenant_notification_defaults"
            " WHERE tenant_id = $1",
            tenant_id,
        )
        if rows:
            snapshot.tenant_defaults[tenant_id] = Preference(
                FilterMode(rows[0]["filter_mode"]), tuple(rows[0]["custom_actions"])
            )
        return snapshot


async def _batched(
    pool: asyncpg.Pool, documents: Sequence[bytes], rules: Rules, batch_size: int
) -> tuple[float, int, list[list[tuple[UUID, tuple[str, ...]]]]]:
    store = ReferenceStore(pool, cache_ttl_s=CACHE_TTL_S)
    resolver = BatchResolver(store, rules)
    heap = HeapPolicy()
    resolved: list[list[tuple[UUID, tuple[str, ...]]]] = []
    started = time.perf_counter()
    for first in range(0, len(documents), batch_size):
        activities = [
            ActivityEvent.model_validate_json(document)
            for document in documents[first : first + batch_size]
        ]
        outcomes = await resolver.resolve(activities)
        processed_at = datetime.now(UTC)
        for outcome in outcomes:
            if isinstance(outcome, Unresolvable):
                resolved.append([])
                continue
            outcome.model_dump_json().encode()
            AuditRecord.model_construct(
                event=outcome.event,
                recipients=tuple(r.principal_id for r in outcome.recipients),
                processed_at=processed_at,
            ).model_dump_json().encode()
            resolved.append([(r.principal_id, r.reasons) for r in outcome.recipients])
        heap.after_batch()
    return time.perf_counter() - started, store.queries, resolved


async def _per_activity(
    pool: asyncpg.Pool, documents: Sequence[bytes], rules: Rules
) -> tuple[float, int, list[list[tuple[UUID, tuple[str, ...]]]]]:
    resolved: list[list[tuple[UUID, tuple[str, ...]]]] = []
    async with pool.acquire() as conn:
        loader = _PerActivityLoader(conn)
        started = time.perf_counter()
        for document in documents:
            activity = ActivityEvent.model_validate_json(document)
            snapshot = await loader.snapshot(activity)
            delivery = resolve(activity, snapshot, rules).delivery
            delivery.model_dump_json().encode()
            AuditRecord.model_construct(
                event=activity,
                recipients=tuple(r.principal_id for r in delivery.recipients),
                processed_at=datetime.now(UTC),
            ).model_dump_json().encode()
            resolved.append([(r.principal_id, r.reasons) for r in delivery.recipients])
        return time.perf_counter() - started, loader.queries, resolved


async def _measure(
    database_url: str, documents: list[bytes], sample: int, batch_size: int
) -> EnrichmentBenchResult:
    settings = StreamsSettings(database_url=database_url)
    rules = Rules(settings.mutation_actions, settings.critical_actions)
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=2, max_size=4)
    try:
        per_activity_s, per_activity_queries, slow = await _per_activity(
            pool, documents[:sample], rules
        )
        batched_s, batched_queries, fast = await _batched(pool, documents, rules, batch_size)
    finally:
        await pool.close()
    return EnrichmentBenchResult(
        activities=len(documents),
        batched_s=batched_s,
        batched_queries=batched_queries,
        recipients=sum(len(r) for r in fast),
        per_activity_sample=len(slow),
        per_activity_s=per_activity_s,
        per_activity_queries=per_activity_queries,
        identical=fast[: len(slow)] == slow,
        batch_size=batch_size,
    )


def run_enrichment_bench(
    server_url: str,
    limit: int | None = None,
    sample: int = PER_ACTIVITY_SAMPLE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    through_faust: bool = False,
) -> EnrichmentBenchResult:
    """Load the reference data into a fresh database of its own, measure, drop the database.

    With `through_faust`, also measure one real enrichment worker fed through Kafka.
    """
    edits = list(read_edits(DATA_FILE, limit))
    documents = [event_of(edit_envelope(edit)).model_dump_json().encode() for edit in edits]
    database = f"activity_bench_enrichment_{uuid4().hex[:8]}"
    database_url = recreate_database(server_url, database)
    try:
        load_reference_data(database_url, build_reference_data(edits))
        result = asyncio.run(_measure(database_url, documents, sample, batch_size))
        if through_faust:
            with tempfile.TemporaryDirectory(prefix="bench-enrichment-") as work_dir:
                ceiling = measure_through_faust(
                    database_url, documents, batch_size, Path(work_dir), idle_agent=True
                )
                rate = measure_through_faust(database_url, documents, batch_size, Path(work_dir))
            result = dataclasses.replace(result, through_faust_per_s=rate, idle_agent_per_s=ceiling)
        return result
    finally:
        drop_database(server_url, database)


WORKER_COMMAND = (sys.executable, "-m", "activity_pipeline.cli", "worker", "enrichment")

IDLE_AGENT_COMMAND = (sys.executable, "-m", "activity_pipeline.bench.idle_agent", "worker")

WORKER_READY_TIMEOUT_S = 120.0
"""How long the Faust worker may take to join its consumer group on a busy machine."""

DRAIN_TIMEOUT_S = 600.0
"""How long the worker may take to deliver every activity before the run is abandoned."""

READY_POLL_S = 0.05
"""Pause between checks that the worker or the reader joined its consumer group."""

READER_POLL_S = 0.2
"""Wait of one poll of the reader of the outputs."""

STOP_TIMEOUT_S = 20.0
"""How long the worker may take to stop after SIGTERM before it is killed."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _group_ready(admin: AdminClient, group: str) -> bool:
    future = admin.describe_consumer_groups([group], request_timeout=10)[group]
    try:
        members = future.result().members
    except KafkaException:
        return False
    return bool(members) and all(m.assignment.topic_partitions for m in members)


def _steady_rate(arrivals: list[tuple[int, int]]) -> float:
    """Return activities per second from the first output batch to the last output.

    The worker's producer sets the output timestamps, so neither the worker's
    start nor the reader's lag counts. The first batch marks the start, so its
    activities are left out.
    """
    first_ms = min(timestamp for timestamp, _ in arrivals)
    last_ms = max(timestamp for timestamp, _ in arrivals)
    after_first = sum(activities for timestamp, activities in arrivals if timestamp > first_ms)
    return after_first / max((last_ms - first_ms) / 1000, 1e-3)


def _joined(consumer: Consumer) -> bool:
    consumer.poll(READER_POLL_S)
    return bool(consumer.assignment())


def _produce_events(bootstrap: str, topic: str, documents: Sequence[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for document in documents:
        producer.produce(topic, value=document)
        producer.poll(0)
    unsent = producer.flush(60)
    if unsent:
        raise TimeoutError(f"{unsent} events were not acknowledged by Kafka within 60 s")


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(READY_POLL_S)


def measure_through_faust(
    database_url: str,
    documents: Sequence[bytes],
    batch_size: int,
    work_dir: Path,
    idle_agent: bool = False,
) -> float:
    """Return activities per second a worker drains from a backlog of `documents`.

    The events are produced first, then the worker starts; the rate runs from
    its first output to its last, by their Kafka timestamps. One `activity
    worker enrichment` process runs under a topic prefix of its own; with
    `idle_agent`, the agent that does nothing runs instead, and each record it
    produces counts the events of one batch.
    """
    command = IDLE_AGENT_COMMAND if idle_agent else WORKER_COMMAND
    group_name = "bench-idle-agent" if idle_agent else "activity-enrichment"
    settings = RelaySettings(topic_prefix=f"bench-enrichment-{uuid4().hex[:8]}.")
    create_pipeline_topics(settings)
    bootstrap = settings.kafka_bootstrap_servers
    environment = {
        **os.environ,
        "ACTIVITY_TOPIC_PREFIX": settings.topic_prefix,
        "ACTIVITY_DATABASE_URL": database_url,
        "ACTIVITY_ENRICHMENT_WEB_PORT": str(_free_port()),
        "ACTIVITY_ENRICHMENT_BATCH_SIZE": str(batch_size),
        "ACTIVITY_FAUST_DATA_DIR": str(work_dir / "faust"),
    }
    _produce_events(bootstrap, settings.topic_prefix + EVENTS_TOPIC, documents)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{settings.topic_prefix}bench-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_prefix + DELIVERIES_TOPIC])
    _wait_for(lambda: _joined(consumer), WORKER_READY_TIMEOUT_S, "reader start")
    log_path = work_dir / f"{group_name}.log"
    with open(log_path, "ab") as log_file:
        worker = subprocess.Popen(
            [*command, *(["--loglevel", "warn"] if idle_agent else ["--log-level", "warning"])],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        group = f"{settings.topic_prefix}{group_name}"
        _wait_for(lambda: _group_ready(admin, group), WORKER_READY_TIMEOUT_S, "worker start")

        arrivals: list[tuple[int, int]] = []
        """(Kafka timestamp in ms, activities) of each output record."""
        delivered = 0
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while delivered < len(documents) and time.monotonic() < deadline:
            for record in consumer.consume(1000, timeout=READER_POLL_S):
                if record.error():
                    continue
                activities = int(record.value()) if idle_agent else 1
                arrivals.append((record.timestamp()[1], activities))
                delivered += activities
        if delivered < len(documents):
            raise TimeoutError(
                f"only {delivered} of {len(documents)} deliveries within {DRAIN_TIMEOUT_S:.0f} s; "
                f"see {log_path}"
            )
        return _steady_rate(arrivals)
    finally:
        consumer.close()
        worker.terminate()
        try:
            worker.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        delete_pipeline_topics(settings)
