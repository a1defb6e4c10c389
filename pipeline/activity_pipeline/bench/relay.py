"""Benchmark of the outbox relay against the naive row-at-a-time relay it replaces.

Both relays run in one process against their own database and topic prefix on
the real PostgreSQL and Kafka, with the same producer settings (idempotent,
`acks=all`):

- batched: `OutboxRelay` as `activity relay` runs it: one poll reads a batch of
  unsent rows, produces them all, waits for the acknowledgements once, and
  marks the batch sent in one statement;
- naive: select one unsent row, produce it, flush, mark it sent, repeat.

The batched relay's drain is also measured deleting rows at acknowledgement
(`ACTIVITY_RELAY_SENT_RETENTION_S=0`) instead of marking them sent.

Two figures per design: the drain rate (rows per second from a filled outbox
onto the topic, marked sent, timed from the relay's first poll) and the
commit-to-acknowledged latency p50/p99 while a writer commits rows at a steady
rate. The default rate is one the naive relay sustains, so that both latencies
are steady-state figures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from activity_producer.dsn import for_libpq
from activity_producer.relay import OutboxRelay, RelaySettings, RelayState
from activity_producer.relay.outbox import SELECT_UNSENT
from activity_producer.relay.relay import producer_config
from activity_schemas.topics import EVENTS_TOPIC
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from activity_pipeline.demo.loader import drop_database, recreate_database
from activity_pipeline.workers import create_pipeline_topics

__all__ = ["RelayBenchOptions", "RelayBenchResult", "run_relay_bench"]

BENCH_DATABASE = "activity_bench_relay"
"""The benchmark's own database, recreated at the start of each run and dropped at its end."""

PAYLOAD_PAD_CHARS = 480
"""Filler in each row's payload, so a record weighs what an activity event document weighs
(about 700 bytes of JSON)."""

RESOURCES = 1_000
"""Distinct Kafka keys (resources) the rows are spread over."""

WRITER_ROWS_PER_COMMIT = 10
"""Rows per writer transaction in the latency phase: a busy service's commits."""

DRAIN_TIMEOUT_S = 600.0
"""Maximum seconds a phase may take before the benchmark gives up, on a very slow machine."""

TARGET_ROWS_PER_S = 20_000
"""Rows per second the batched relay must move from the outbox into Kafka."""

STOP_TIMEOUT_S = 60.0
"""How long the batched relay may take to stop after its phase."""

_FILL = """
    INSERT INTO activity_outbox (
        event_id, topic, message_key, event_type, tenant_id, subject, occurred_at, payload
    )
    SELECT gen_random_uuid(), %(topic)s, %(tenant)s || ':' || (i %% %(resources)s),
           'signal.created', %(tenant)s::uuid, (i %% %(resources)s)::text, clock_timestamp(),
           jsonb_build_object('sequence', i, 'pad', repeat('x', %(pad)s))
    FROM generate_series(1, %(rows)s) AS i
    RETURNING id
"""

_NAIVE_MARK = "UPDATE activity_outbox SET sent_at = clock_timestamp() WHERE id = %s"


@dataclass(frozen=True)
class RelayBenchOptions:
    """Sizes of one benchmark run."""

    rows: int = 100_000
    naive_rows: int = 2_000
    latency_rate_per_s: float = 200.0
    latency_seconds: float = 10.0
    batch_size: int = 5_000


@dataclass(frozen=True)
class DesignFigures:
    """Figures of one design."""

    drained_rows: int
    drain_rows_per_s: float
    latency_rows: int
    latency_p50_ms: float
    latency_p99_ms: float


@dataclass(frozen=True)
class RelayBenchResult:
    """Both designs' figures, measured in the same run."""

    batched: DesignFigures
    naive: DesignFigures
    deleting_rows_per_s: float
    """Drain rate of the batched relay with ACTIVITY_RELAY_SENT_RETENTION_S=0."""
    options: RelayBenchOptions

    def render(self) -> str:
        """Return the figures as a small table with the ratios."""
        b, n = self.batched, self.naive
        rate_ratio = b.drain_rows_per_s / n.drain_rows_per_s if n.drain_rows_per_s else 0.0
        p50_ratio = n.latency_p50_ms / b.latency_p50_ms if b.latency_p50_ms else 0.0
        p99_ratio = n.latency_p99_ms / b.latency_p99_ms if b.latency_p99_ms else 0.0
        best = max(b.drain_rows_per_s, self.deleting_rows_per_s)
        verdict = "met" if best >= TARGET_ROWS_PER_S else "NOT met"
        rate = self.options.latency_rate_per_s
        return "\n".join(
            [
                "relay benchmark: outbox -> Kafka (idempotent, acks=all), same run",
                f"{'':28}{'batched':>14}{'naive':>14}{'ratio':>10}",
                f"{'rows drained':28}{b.drained_rows:>14,}{n.drained_rows:>14,}",
                f"{'rows/s':28}{b.drain_rows_per_s:>14,.0f}{n.drain_rows_per_s:>14,.0f}"
                f"{rate_ratio:>9.1f}x",
                f"{f'commit->ack p50 @ {rate:,.0f}/s ms':28}"
                f"{b.latency_p50_ms:>14.1f}{n.latency_p50_ms:>14.1f}{p50_ratio:>9.1f}x",
                f"{f'commit->ack p99 @ {rate:,.0f}/s ms':28}"
                f"{b.latency_p99_ms:>14.1f}{n.latency_p99_ms:>14.1f}{p99_ratio:>9.1f}x",
                f"{'rows in latency phase':28}{b.latency_rows:>14,}{n.latency_rows:>14,}",
                f"{'rows/s, delete at ack':28}{self.deleting_rows_per_s:>14,.0f}"
                f"{'':>14}{self.deleting_rows_per_s / max(n.drain_rows_per_s, 1e-9):>9.1f}x",
                f"target >= {TARGET_ROWS_PER_S:,} rows/s for the batched relay: {verdict}",
            ]
        )


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _fill(database_url: str, rows: int) -> list[int]:
    """Insert `rows` outbox rows in one committed statement; return their ids."""
    with psycopg.connect(for_libpq(database_url)) as conn:
        ids = [
            row[0]
            for row in conn.execute(
                _FILL,
                {
                    "topic": EVENTS_TOPIC,
                    "tenant": str(uuid.uuid4()),
                    "resources": RESOURCES,
                    "pad": PAYLOAD_PAD_CHARS,
                    "rows": rows,
                },
            ).fetchall()
        ]
    return ids


class _Writer:
    """Commits rows at a steady rate on a thread, and notes each row's commit time."""

    def __init__(self, database_url: str, rate_per_s: float, seconds: float) -> None:
        self._database_url = database_url
        self._interval_s = WRITER_ROWS_PER_COMMIT / rate_per_s
        self._commits = int(rate_per_s * seconds / WRITER_ROWS_PER_COMMIT)
        self.committed_at: dict[int, float] = {}
        self._thread = threading.Thread(target=self._write, name="bench-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def _write(self) -> None:
        tenant = str(uuid.uuid4())
        with psycopg.connect(for_libpq(self._database_url)) as conn:
            next_at = time.monotonic()
            for _ in range(self._commits):
                ids = [
                    row[0]
                    for row in conn.execute(
                        _FILL,
                        {
                            "topic": EVENTS_TOPIC,
                            "tenant": tenant,
                            "resources": RESOURCES,
                            "pad": PAYLOAD_PAD_CHARS,
                            "rows": WRITER_ROWS_PER_COMMIT,
                        },
                    ).fetchall()
                ]
                conn.commit()
                committed = time.time()
                for row_id in ids:
                    self.committed_at[row_id] = committed
                next_at += self._interval_s
                time.sleep(max(0.0, next_at - time.monotonic()))


class _AckLog:
    """Acknowledgement times by row id, filled by either relay."""

    def __init__(self) -> None:
        self.acked_at: dict[int, float] = {}
        self._lock = threading.Lock()

    def record(self, row_ids: Sequence[int], acked_at: Sequence[float]) -> None:
        with self._lock:
            self.acked_at.update(zip(row_ids, acked_at, strict=True))

    def count(self) -> int:
        with self._lock:
            return len(self.acked_at)


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark phase did not finish within {DRAIN_TIMEOUT_S} s: {what}")
        time.sleep(0.005)


def _latencies(writer: _Writer, acks: _AckLog) -> list[float]:
    return [
        (acks.acked_at[row_id] - committed) * 1000.0
        for row_id, committed in writer.committed_at.items()
        if row_id in acks.acked_at
    ]


class _NaiveRelay:
    """The replaced design: one row per round trip to PostgreSQL and to Kafka."""

    def __init__(self, settings: RelaySettings, producer_config: dict[str, Any]) -> None:
        self._settings = settings
        self._producer = Producer(producer_config)
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.acks = _AckLog()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        with psycopg.connect(for_libpq(self._settings.database_url), autocommit=True) as conn:
            conn.execute("SET enable_sort = off")  # the same plan as the batched relay's poll
            self.connected.set()
            while not self._stopping.is_set():
                if not self._relay_one(conn):
                    time.sleep(0.001)

    def _relay_one(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(SELECT_UNSENT, (1,)).fetchone()
        if row is None:
            return False
        row_id, event_id, topic, key, event_type, tenant_id, subject, occurred_at, value = row[:9]
        delivered: list[KafkaError | None] = []

        def on_delivery(error: KafkaError | None, _: Message) -> None:
            delivered.append(error)

        self._producer.produce(
            f"{self._settings.topic_prefix}{topic}",
            value=value.encode(),
            key=key.encode(),
            headers=[
                ("ce_specversion", b"1.0"),
                ("ce_id", str(event_id).encode()),
                ("ce_source", f"/tenants/{tenant_id}".encode()),
                ("ce_type", event_type.encode()),
                ("ce_subject", subject.encode()),
                ("ce_time", occurred_at.encode()),
            ],
            on_delivery=on_delivery,
        )
        self._producer.flush(30.0)
        if delivered != [None]:
            raise RuntimeError(f"naive relay: outbox row {row_id} not acknowledged: {delivered}")
        self.acks.record([row_id], [time.time()])
        conn.execute(_NAIVE_MARK, (row_id,))
        return True


def _run_batched(
    settings: RelaySettings, options: RelayBenchOptions, database_url: str
) -> DesignFigures:
    acks = _AckLog()
    ids = _fill(database_url, options.rows)
    relay = OutboxRelay(settings, on_acknowledged=acks.record)
    thread = threading.Thread(target=relay.run, name="bench-relay", daemon=True)

    thread.start()
    _wait_for(lambda: relay.state is RelayState.ACTIVE, "batched relay start")
    started = time.perf_counter()
    _wait_for(lambda: relay.stats.rows_sent >= len(ids), "batched drain")
    drain_s = time.perf_counter() - started

    writer = _Writer(database_url, options.latency_rate_per_s, options.latency_seconds)
    writer.start()
    writer.join()
    _wait_for(lambda: all(i in acks.acked_at for i in writer.committed_at), "batched latency")
    relay.stop()
    thread.join(STOP_TIMEOUT_S)

    latencies = _latencies(writer, acks)
    return DesignFigures(
        drained_rows=len(ids),
        drain_rows_per_s=len(ids) / drain_s,
        latency_rows=len(latencies),
        latency_p50_ms=_percentile(latencies, 0.50),
        latency_p99_ms=_percentile(latencies, 0.99),
    )


def _run_batched_deleting(settings: RelaySettings, rows: int, database_url: str) -> float:
    """Return the drain rate of the batched relay that deletes rows at acknowledgement."""
    ids = _fill(database_url, rows)
    relay = OutboxRelay(settings.model_copy(update={"relay_sent_retention_s": 0.0}))
    thread = threading.Thread(target=relay.run, name="bench-relay-deleting", daemon=True)

    thread.start()
    _wait_for(lambda: relay.state is RelayState.ACTIVE, "deleting relay start")
    started = time.perf_counter()
    _wait_for(lambda: relay.stats.rows_sent >= len(ids), "deleting drain")
    drain_s = time.perf_counter() - started
    relay.stop()
    thread.join(STOP_TIMEOUT_S)

    return len(ids) / drain_s


def _run_naive(
    settings: RelaySettings,
    options: RelayBenchOptions,
    database_url: str,
    producer_config: dict[str, Any],
) -> DesignFigures:
    ids = _fill(database_url, options.naive_rows)
    relay = _NaiveRelay(settings, producer_config)
    thread = threading.Thread(target=relay.run, name="bench-naive-relay", daemon=True)

    thread.start()
    _wait_for(relay.connected.is_set, "naive relay start")
    started = time.perf_counter()
    _wait_for(lambda: relay.acks.count() >= len(ids), "naive drain")
    drain_s = time.perf_counter() - started

    writer = _Writer(database_url, options.latency_rate_per_s, options.latency_seconds)
    writer.start()
    writer.join()
    _wait_for(lambda: all(i in relay.acks.acked_at for i in writer.committed_at), "naive latency")
    relay.stop()
    thread.join(STOP_TIMEOUT_S)

    latencies = _latencies(writer, relay.acks)
    return DesignFigures(
        drained_rows=len(ids),
        drain_rows_per_s=len(ids) / drain_s,
        latency_rows=len(latencies),
        latency_p50_ms=_percentile(latencies, 0.50),
        latency_p99_ms=_percentile(latencies, 0.99),
    )


def _delete_topics(settings: RelaySettings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    names = [
        name
        for name in admin.list_topics(timeout=30).topics
        if name.startswith(settings.topic_prefix)
    ]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result()


def run_relay_bench(
    options: RelayBenchOptions, echo: Callable[[str], None] = print
) -> RelayBenchResult:
    """Run both relays on their own database and topic prefix; return the figures.

    The database and the topics are removed at the end of the run.
    """
    base = RelaySettings()
    prefix = f"bench-relay-{uuid.uuid4().hex[:8]}."
    database_url = recreate_database(base.database_url, BENCH_DATABASE)
    settings = base.model_copy(
        update={
            "database_url": database_url,
            "topic_prefix": prefix,
            "relay_batch_size": options.batch_size,
            "relay_metrics_port": 0,
            "relay_cleanup_batch_size": 0,
        }
    )
    try:
        create_pipeline_topics(settings)
        config = producer_config(settings)

        echo(f"batched relay: draining {options.rows:,} rows ...")
        batched = _run_batched(settings, options, database_url)
        echo(f"batched relay deleting at acknowledgement: draining {options.rows:,} rows ...")
        deleting = _run_batched_deleting(settings, options.rows, database_url)
        echo(f"naive relay: draining {options.naive_rows:,} rows ...")
        naive = _run_naive(settings, options, database_url, config)
    finally:
        drop_database(base.database_url, BENCH_DATABASE)
        _delete_topics(settings)
    return RelayBenchResult(
        batched=batched, naive=naive, deleting_rows_per_s=deleting, options=options
    )
