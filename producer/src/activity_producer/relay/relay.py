"""The relay: moves committed outbox rows onto Kafka, in commit order per resource.

Why no row is skipped: the relay keeps no "highest id sent" cursor. Each poll
selects the rows that are still unsent (`sent_at IS NULL`) and committed,
through a partial index on unsent rows. A transaction that took a lower id but
commits after a higher one is simply found by the next poll, so a late commit
cannot fall behind a cursor. Rows are marked sent only after Kafka
acknowledged them, so a crash in between sends them again (at least once)
with the same event id, which every consumer uses to drop the duplicate.

Why order holds: one relay is active per outbox database, under a PostgreSQL
advisory lock that standbys wait for. The producer is idempotent with
`acks=all`, each resource has one Kafka key, and a row waiting for a retry
keeps the later rows of its key back. A row that cannot be produced goes to
the dead-letter topic after bounded retries, and the rest flow on.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
import structlog
from activity_schemas.topics import DEAD_LETTER_TOPIC
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from activity_producer.dsn import for_libpq
from activity_producer.errors import RelayError
from activity_producer.relay import outbox
from activity_producer.relay.metrics import MetricsServer, RelayMetrics
from activity_producer.relay.outbox import OutboxRow
from activity_producer.relay.settings import RelaySettings

__all__ = [
    "ADVISORY_LOCK_KEY",
    "NOTIFY_CHANNEL",
    "OutboxRelay",
    "RelayState",
    "RelayStats",
    "producer_config",
]

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "activity_outbox"
"""Channel on which a trigger on the outbox table notifies the relay of each commit."""

ADVISORY_LOCK_KEY = 0x0AC7_0B0C
"""Key of the session advisory lock that makes one relay per outbox database the active one."""

STANDBY_RETRY_S = 1.0
"""How often a standby tries to take the lock: the takeover delay after the active relay dies."""

FLUSH_TIMEOUT_S = 30.0
"""How long one batch may wait for Kafka's acknowledgements before the batch fails."""

QUEUE_FULL_WAIT_S = 0.05
"""Seconds to serve delivery reports when the producer's local queue is full, before retrying."""

RETRY_DELAYS_S = (0.5, 2.0)
"""Waits before the 2nd and 3rd attempt at a row Kafka rejected; then it is dead-lettered.

Long enough for a topic being created to appear, short enough that the rows
held behind it (same key only) wait a few seconds at most.
"""

MAX_ATTEMPTS = len(RETRY_DELAYS_S) + 1
"""Attempts at a rejected row before it goes to the dead-letter topic."""

TOPIC_REFRESH_S = 5.0
"""Minimum seconds between two refreshes of the known topics when a row names an unknown one."""

METADATA_TIMEOUT_S = 10.0
"""How long a topic metadata request may take."""

HOUSEKEEPING_INTERVAL_S = 5.0
"""Seconds between lag samples, oldest-transaction checks and cleanup rounds."""

CLEANUP_MAX_BATCHES = 10
"""Delete statements per cleanup round, so a round delays relaying by a bounded time."""

BACKOFF_INITIAL_S = 0.5
"""Wait after the first failed batch or lost connection; doubled after each further one."""

BACKOFF_MAX_S = 30.0
"""Maximum wait in seconds between two attempts after repeated failures."""

TCP_KEEPALIVE: dict[str, Any] = {
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
"""Keepalive seconds and probes on the relay's connection, both ends: a vanished relay host
frees the advisory lock (and a vanished server is noticed) within about 25 s."""

LATENCY_SAMPLES_PER_BATCH = 100
"""Rows per batch whose insert-to-ack time is observed: evenly spread, and cheap at 5000 rows."""

CONTENT_TYPE = b"application/json"

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")

_REJECTING_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._INVALID_ARG,
    }
)
"""Delivery errors caused by the record itself: retried a few times, then dead-lettered.
Any other delivery error (timeouts, a broker away) fails the batch and is retried as a whole."""


class RelayState(Enum):
    """Lifecycle of a relay process."""

    CREATED = "created"
    STANDBY = "standby"
    ACTIVE = "active"
    STOPPED = "stopped"


_TRANSITIONS = {
    RelayState.CREATED: {RelayState.STANDBY, RelayState.STOPPED},
    RelayState.STANDBY: {RelayState.ACTIVE, RelayState.STOPPED},
    # Back to standby when the database connection, and with it the lock, is lost.
    RelayState.ACTIVE: {RelayState.STANDBY, RelayState.STOPPED},
    RelayState.STOPPED: set(),
}


@dataclass
class RelayStats:
    """Counters of one relay process since it started."""

    rows_sent: int = 0
    rows_dead_lettered: int = 0
    batches: int = 0
    last_batch_size: int = 0
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class _Retry:
    attempts: int
    next_at: float
    reason: str


@dataclass
class _Batch:
    acknowledged: list[int] = field(default_factory=list)
    acknowledged_at: list[float] = field(default_factory=list)
    rejected: list[tuple[int, KafkaError]] = field(default_factory=list)
    failures: list[tuple[int, KafkaError]] = field(default_factory=list)
    dead: dict[int, str] = field(default_factory=dict)
    dead_acknowledged: list[int] = field(default_factory=list)


Headers = list[tuple[str, str | bytes | None]]
"""Kafka record headers, as confluent-kafka takes them."""

AckHook = Callable[[Sequence[int], Sequence[float]], None]
"""Called after each batch with the acknowledged row ids and their wall-clock ack times."""


class OutboxRelay:
    """Polls the outbox and produces its rows to Kafka; one instance per process.

    `run()` blocks until `stop()` is called from another thread or a signal
    handler, then flushes the producer and releases the advisory lock.
    """

    def __init__(
        self,
        settings: RelaySettings,
        *,
        on_batch: Callable[[RelayStats], None] | None = None,
        on_acknowledged: AckHook | None = None,
        producer: Producer | None = None,
    ) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._on_acknowledged = on_acknowledged
        self._stopping = threading.Event()
        self.state = RelayState.CREATED
        self.stats = RelayStats()
        self.metrics = RelayMetrics()
        self._producer = producer if producer is not None else Producer(producer_config(settings))
        self._dead_letter_topic = f"{settings.topic_prefix}{DEAD_LETTER_TOPIC}"
        self._retries: dict[int, _Retry] = {}
        self._topics: set[str] = set()
        self._topics_refreshed_at = float("-inf")
        self._housekeeping_at = float("-inf")
        self._metrics_server = MetricsServer(
            settings.relay_metrics_host, settings.relay_metrics_port, self.metrics, self._health
        )

    @property
    def metrics_port(self) -> int | None:
        """The port of the metrics endpoint while it listens, else None."""
        return self._metrics_server.port

    def _move_to(self, state: RelayState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RelayError(
                f"relay cannot move from {self.state.value} to {state.value}; "
                "create a new OutboxRelay to run again"
            )
        log.info("relay_state_changed", previous=self.state.value, state=state.value)
        self.state = state
        self.metrics.active.set(1 if state is RelayState.ACTIVE else 0)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        healthy = self.state in (RelayState.STANDBY, RelayState.ACTIVE)
        return healthy, {"state": self.state.value, "rows_sent": self.stats.rows_sent}

    def stop(self) -> None:
        """Ask `run()` to finish its current batch, flush, and return."""
        self._stopping.set()

    def run(self) -> None:
        """Wait to become the active relay, then relay rows until `stop()` is called.

        A lost database connection gives the lock up: the relay goes back to
        standby and reconnects with a growing backoff.
        """
        self._move_to(RelayState.STANDBY)
        if self._settings.relay_metrics_port:
            self._metrics_server.start()
        backoff_s = BACKOFF_INITIAL_S
        try:
            while not self._stopping.is_set():
                try:
                    self._run_connected()
                    backoff_s = BACKOFF_INITIAL_S
                except psycopg.OperationalError as exc:
                    self.metrics.errors.labels(kind="database").inc()
                    log.error(
                        "relay_database_lost",
                        error=str(exc).strip(),
                        retry_in_s=backoff_s,
                        consequence="unsent rows stay in the outbox; standing by to reconnect",
                    )
                    if self.state is RelayState.ACTIVE:
                        self._move_to(RelayState.STANDBY)
                    self._stopping.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                except psycopg.Error as exc:
                    raise RelayError(
                        f"an outbox statement failed: {str(exc).splitlines()[0]}; check that the "
                        "database is migrated to the latest revision (`activity migrate`)"
                    ) from exc
        finally:
            self._flush_on_stop()
            self._move_to(RelayState.STOPPED)
            self._metrics_server.stop()

    def _run_connected(self) -> None:
        with psycopg.connect(
            for_libpq(self._settings.database_url),
            autocommit=True,
            application_name=_application_name(),
            keepalives=1,
            **TCP_KEEPALIVE,
        ) as conn:
            for name, value in TCP_KEEPALIVE.items():
                conn.execute(f"SET tcp_{name} = {int(value)}")
            # The poll must walk the partial index in id order, so that its cost is the
            # batch, not the backlog: with stale statistics (a young or fast-growing
            # outbox) the planner would otherwise read and sort every unsent row.
            conn.execute("SET enable_sort = off")
            if not self._wait_for_lock(conn):
                return
            try:
                self._move_to(RelayState.ACTIVE)
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._refresh_topics(force=True)
                self._relay_until_stopped(conn)
            finally:
                self._flush_on_stop()

    def _flush_on_stop(self) -> None:
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        if remaining:
            log.warning(
                "relay_flush_incomplete",
                unacknowledged=remaining,
                consequence="rows stay unsent and will be sent again: at least once",
            )

    def _wait_for_lock(self, conn: psycopg.Connection[Any]) -> bool:
        while not self._stopping.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                return True
            self._stopping.wait(STANDBY_RETRY_S)
        return False

    def _relay_until_stopped(self, conn: psycopg.Connection[Any]) -> None:
        batch_size = self._settings.relay_batch_size
        backoff_s = BACKOFF_INITIAL_S
        while not self._stopping.is_set():
            try:
                handled = self.relay_once(conn)
                backoff_s = BACKOFF_INITIAL_S
            except RelayError as exc:
                if not exc.retriable:
                    raise
                self.metrics.errors.labels(kind="batch").inc()
                log.error("relay_batch_failed", error=str(exc), retry_in_s=backoff_s)
                self._stopping.wait(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                continue

            self._housekeeping(conn)
            if handled < batch_size:
                self._wait_for_notify(conn)

    def _wait_for_notify(self, conn: psycopg.Connection[Any]) -> None:
        # Returns on the first NOTIFY, or after the poll interval when none arrives.
        for _ in conn.notifies(timeout=self._settings.relay_poll_interval_s, stop_after=1):
            pass

    def relay_once(self, conn: psycopg.Connection[Any]) -> int:
        """Produce one batch of unsent rows, mark the acknowledged ones sent, return their count.

        The count includes rows sent to the dead-letter topic. Raises a
        retriable `RelayError` when Kafka failed to acknowledge rows for a
        reason other than the record itself; the rows acknowledged before are
        marked sent, the others stay unsent.
        """
        rows = outbox.select_unsent(conn, self._settings.relay_batch_size)
        if not rows:
            return 0
        self.metrics.batch_size.observe(len(rows))

        # TODO: poll the next batch while this one waits for acknowledgements and marking.
        batch = _Batch()
        self._produce_batch(rows, batch)
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)
        self._settle_rejections(rows, batch)
        remaining += self._produce_dead_letters(rows, batch)

        if self._settings.relay_sent_retention_s == 0:
            outbox.delete_acknowledged(conn, batch.acknowledged)
        else:
            outbox.mark_sent(conn, batch.acknowledged)
        dead = {row_id: batch.dead[row_id] for row_id in batch.dead_acknowledged}
        outbox.mark_dead_lettered(conn, dead)
        self._count(rows, batch)

        if remaining or batch.failures:
            self.metrics.errors.labels(kind="delivery").inc(remaining + len(batch.failures))
            first = batch.failures[0] if batch.failures else None
            raise RelayError(
                f"Kafka did not acknowledge {remaining + len(batch.failures)} of {len(rows)} rows"
                + (f"; first failure on outbox row {first[0]}: {first[1].str()}" if first else "")
                + "; they stay unsent and will be retried"
            )
        return len(batch.acknowledged) + len(batch.dead_acknowledged)

    def _produce_batch(self, rows: list[OutboxRow], batch: _Batch) -> None:
        now = time.monotonic()
        held_keys: set[str] = set()
        for row in rows:
            if row.message_key in held_keys:
                continue
            retry = self._retries.get(row.id)
            if retry is not None and retry.next_at > now:
                # Later rows of this key wait behind it, so that its order holds.
                held_keys.add(row.message_key)
                continue
            topic = f"{self._settings.topic_prefix}{row.topic}"
            value = row.value.encode()
            key = row.message_key.encode()
            headers, headers_size = _headers(row)

            verdict = self._check(topic, len(value) + len(key) + headers_size)
            if verdict is not None:
                final, reason = verdict
                if final or self._schedule_retry(row, reason, now):
                    batch.dead[row.id] = reason
                else:
                    held_keys.add(row.message_key)
                continue
            self._produce(row, topic, value, key, headers, batch)

    def _check(self, topic: str, size: int) -> tuple[bool, str] | None:
        """Return (final, reason) when a record of `size` bytes cannot go to `topic`, else None."""
        if size > self._settings.relay_max_message_bytes:
            return True, (
                f"record of {size} bytes exceeds the limit of "
                f"{self._settings.relay_max_message_bytes} bytes (ACTIVITY_RELAY_MAX_MESSAGE_BYTES)"
            )
        if not _TOPIC_NAME.match(topic):
            return True, f"topic name {topic!r} is not a valid Kafka topic name"
        if topic not in self._topics:
            self._refresh_topics(force=False)
        if topic not in self._topics:
            return False, f"topic {topic!r} does not exist; create it with `activity migrate`"
        return None

    def _schedule_retry(self, row: OutboxRow, reason: str, now: float) -> bool:
        """Count one more failed attempt at `row`; return True when attempts are exhausted."""
        previous = self._retries.get(row.id)
        attempts = 1 if previous is None else previous.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            return True
        self._retries[row.id] = _Retry(attempts, now + RETRY_DELAYS_S[attempts - 1], reason)
        self.metrics.errors.labels(kind="rejected").inc()
        log.warning(
            "relay_row_rejected",
            outbox_id=row.id,
            topic=row.topic,
            attempt=attempts,
            max_attempts=MAX_ATTEMPTS,
            reason=reason,
        )
        return False

    def _produce(
        self,
        row: OutboxRow,
        topic: str,
        value: bytes,
        key: bytes,
        headers: Headers,
        batch: _Batch,
    ) -> None:
        callback = functools.partial(_record_delivery, batch, row.id)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=callback
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports to make room.
                self._producer.poll(QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                batch.dead[row.id] = f"producer refused the record: {exc.args[0].str()}"
                return

    def _settle_rejections(self, rows: list[OutboxRow], batch: _Batch) -> None:
        """Schedule a retry for each row Kafka rejected, or dead-letter it when out of attempts."""
        if not batch.rejected:
            return
        by_id = {row.id: row for row in rows}
        now = time.monotonic()
        for row_id, error in batch.rejected:
            reason = f"Kafka rejected the record: {error.str()}"
            if self._schedule_retry(by_id[row_id], reason, now):
                batch.dead[row_id] = reason

    def _produce_dead_letters(self, rows: list[OutboxRow], batch: _Batch) -> int:
        """Produce the dead-letter record of each row in `batch.dead`; return the unacknowledged."""
        if not batch.dead:
            return 0
        for row in rows:
            reason = batch.dead.get(row.id)
            if reason is None:
                continue
            value = row.value.encode()
            if len(value) > self._settings.relay_max_message_bytes // 2:
                value = b""
            headers = [
                *_headers(row)[0],
                ("dead_letter_reason", reason.encode()),
                ("dead_letter_source", f"activity_outbox:{row.id}".encode()),
                ("dead_letter_topic", row.topic.encode()),
                ("dead_letter_value_dropped", b"true" if not value else b"false"),
            ]
            self._producer.produce(
                self._dead_letter_topic,
                value=value,
                key=row.message_key.encode()[:1024],
                headers=headers,
                on_delivery=functools.partial(_record_dead_letter, batch, row.id),
            )
            log.error(
                "relay_row_dead_lettered",
                outbox_id=row.id,
                event_id=row.event_id,
                topic=row.topic,
                reason=reason,
            )
        return self._producer.flush(FLUSH_TIMEOUT_S)

    def _refresh_topics(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._topics_refreshed_at < TOPIC_REFRESH_S:
            return
        try:
            metadata = self._producer.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            raise RelayError(
                f"cannot read topic metadata from Kafka at "
                f"{self._settings.kafka_bootstrap_servers}: {exc}; "
                "check that the broker is running (`activity stack status`)"
            ) from exc
        self._topics = set(metadata.topics)
        self._topics_refreshed_at = now

    def _count(self, rows: list[OutboxRow], batch: _Batch) -> None:
        for row_id in batch.acknowledged:
            self._retries.pop(row_id, None)
        for row_id in batch.dead_acknowledged:
            self._retries.pop(row_id, None)

        sent = len(batch.acknowledged)
        self.stats.rows_sent += sent
        self.stats.rows_dead_lettered += len(batch.dead_acknowledged)
        self.stats.batches += 1
        self.stats.last_batch_size = sent
        self.metrics.rows_sent.inc(sent)
        self.metrics.dead_letters.inc(len(batch.dead_acknowledged))
        self.metrics.observe_rate(time.monotonic(), sent)
        if sent:
            created = {row.id: row.created_at for row in rows}
            stride = max(1, sent // LATENCY_SAMPLES_PER_BATCH)
            for index in range(0, sent, stride):
                latency = batch.acknowledged_at[index] - created[batch.acknowledged[index]]
                self.metrics.record_to_ack.observe(max(latency, 0.0))
        if self._on_acknowledged is not None:
            self._on_acknowledged(batch.acknowledged, batch.acknowledged_at)
        if self._on_batch is not None:
            self._on_batch(self.stats)

    def _housekeeping(self, conn: psycopg.Connection[Any]) -> None:
        """Sample the lag, name a blocking transaction and delete old sent rows, every 5 s."""
        now = time.monotonic()
        if now - self._housekeeping_at < HOUSEKEEPING_INTERVAL_S:
            return
        self._housekeeping_at = now

        self.metrics.observe_rate(now, 0)
        sample = outbox.sample_outbox(conn)
        self.metrics.oldest_unsent_age.set(sample.oldest_unsent_age_s)
        self.metrics.unsent_rows.set(sample.unsent_rows)

        oldest = outbox.oldest_open_transaction(conn)
        self.metrics.oldest_transaction_age.set(0.0 if oldest is None else oldest.age_s)
        if oldest is not None and oldest.age_s >= self._settings.relay_transaction_warning_s:
            log.warning(
                "relay_held_back_by_transaction",
                pid=oldest.pid,
                application_name=oldest.application_name,
                state=oldest.state,
                age_s=round(oldest.age_s, 1),
                consequence="vacuum cannot remove sent outbox rows; polls slow down",
                remedy="commit or end that session (pg_terminate_backend(pid))",
            )

        if self._settings.relay_cleanup_batch_size:
            deleted = outbox.delete_sent_rows(
                conn,
                self._settings.relay_sent_retention_s,
                self._settings.relay_cleanup_batch_size,
                CLEANUP_MAX_BATCHES,
            )
            if deleted:
                self.metrics.rows_deleted.inc(deleted)
                log.info("relay_sent_rows_deleted", rows=deleted)


def producer_config(settings: RelaySettings) -> dict[str, Any]:
    """Return the confluent-kafka configuration of the relay's producer."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # Idempotence with acks=all keeps one partition's records in order across retries.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.size": 1_000_000,
        # Room for the record's framing on top of the largest value the relay accepts.
        "message.max.bytes": settings.relay_max_message_bytes + 65_536,
        # Topics are created with their partitions by `ensure_topics`, never by accident.
        "allow.auto.create.topics": False,
    }


_CE_NAMES_BYTES = (
    sum(
        len(name)
        for name in (
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
            "content-type",
        )
    )
    + len(b"1.0")
    + len(CONTENT_TYPE)
)


def _headers(row: OutboxRow) -> tuple[Headers, int]:
    """CloudEvents binary-mode headers, then the row's own headers (such as `traceparent`).

    Returns the headers and their size in bytes, names included.
    """
    ce_id = row.event_id.encode()
    ce_source = f"/tenants/{row.tenant_id}".encode()
    ce_type = row.event_type.encode()
    ce_subject = row.subject.encode()
    ce_time = row.occurred_at.encode()
    headers: Headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id),
        ("ce_source", ce_source),
        ("ce_type", ce_type),
        ("ce_subject", ce_subject),
        ("ce_time", ce_time),
        ("content-type", CONTENT_TYPE),
    ]
    size = (
        _CE_NAMES_BYTES
        + len(ce_id)
        + len(ce_source)
        + len(ce_type)
        + len(ce_subject)
        + len(ce_time)
    )
    if row.headers is not None:
        for name, value in json.loads(row.headers).items():
            data = (value if isinstance(value, str) else json.dumps(value)).encode()
            headers.append((name, data))
            size += len(name.encode()) + len(data)
    return headers, size


def _application_name() -> str:
    """Name the relay's session in pg_stat_activity by host and process id."""
    return f"activity-relay {socket.gethostname()} {os.getpid()}"[:63]


def _record_delivery(batch: _Batch, row_id: int, error: KafkaError | None, _: Message) -> None:
    if error is None:
        batch.acknowledged.append(row_id)
        batch.acknowledged_at.append(time.time())
    elif error.code() in _REJECTING_CODES:
        batch.rejected.append((row_id, error))
    else:
        batch.failures.append((row_id, error))


def _record_dead_letter(batch: _Batch, row_id: int, error: KafkaError | None, _: Message) -> None:
    if error is None:
        batch.dead_acknowledged.append(row_id)
    else:
        batch.failures.append((row_id, error))
