"""The relay: moves committed outbox rows onto Kafka, in commit order per resource.

Why no row is skipped: the relay never keeps an "highest id sent" cursor.
Each poll selects the rows that are still unsent (`sent_at IS NULL`) and
visible, that is committed. A transaction that took a lower id but commits
after a higher one is simply found by the next poll, so a late commit cannot
fall behind a cursor. Rows are marked sent only after Kafka acknowledged
them, so a crash in between sends them again (at least once) with the same
event id, which every consumer uses to drop the duplicate.

Why order holds: one relay is active per database (a PostgreSQL advisory
lock; standbys wait for it), the producer is idempotent with `acks=all`, and
each resource has one Kafka key, so one partition receives its activities in
the order their rows became visible to the relay.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import psycopg
import structlog
from confluent_kafka import KafkaError, Message, Producer

from activity_producer.dsn import for_libpq
from activity_producer.errors import RelayError
from activity_producer.relay.settings import RelaySettings

__all__ = ["NOTIFY_CHANNEL", "OutboxRelay", "RelayState", "RelayStats"]

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "activity_outbox"
"""Channel on which a trigger on the outbox table notifies the relay of each commit."""

ADVISORY_LOCK_KEY = 0x0AC7_0B0C
"""Key of the session advisory lock that makes one relay per database the active one."""

STANDBY_RETRY_S = 1.0
"""How often a standby tries to take the lock: the takeover delay after the active relay dies."""

FLUSH_TIMEOUT_S = 30.0
"""How long one batch may wait for Kafka's acknowledgements before the batch fails."""

_SELECT_UNSENT = """
    SELECT id, event_id, topic, message_key, event_type, tenant_id, subject, occurred_at,
           payload::text AS value, headers
    FROM activity_outbox
    WHERE sent_at IS NULL
    ORDER BY id
    LIMIT %s
"""

_MARK_SENT = "UPDATE activity_outbox SET sent_at = clock_timestamp() WHERE id = ANY(%s)"


class RelayState(Enum):
    """Lifecycle of a relay process."""

    CREATED = "created"
    STANDBY = "standby"
    ACTIVE = "active"
    STOPPED = "stopped"


_TRANSITIONS = {
    RelayState.CREATED: {RelayState.STANDBY, RelayState.STOPPED},
    RelayState.STANDBY: {RelayState.ACTIVE, RelayState.STOPPED},
    RelayState.ACTIVE: {RelayState.STOPPED},
    RelayState.STOPPED: set(),
}


@dataclass
class RelayStats:
    """Counters of one relay process since it started."""

    rows_sent: int = 0
    batches: int = 0
    last_batch_size: int = 0
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class _Batch:
    acknowledged: list[int] = field(default_factory=list)
    failures: list[tuple[int, KafkaError]] = field(default_factory=list)


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
    ) -> None:
        self._settings = settings
        self._on_batch = on_batch
        self._stopping = threading.Event()
        self.state = RelayState.CREATED
        self.stats = RelayStats()
        self._producer = Producer(self._producer_config())

    def _producer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self._settings.kafka_bootstrap_servers,
            # Idempotence with acks=all keeps one partition's records in order across retries.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.size": 1_000_000,
        }

    def _move_to(self, state: RelayState) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RelayError(f"relay cannot move from {self.state.value} to {state.value}")
        log.info("relay_state_changed", previous=self.state.value, state=state.value)
        self.state = state

    def stop(self) -> None:
        """Ask `run()` to finish its current batch and return."""
        self._stopping.set()

    def run(self) -> None:
        """Wait to become the active relay, then relay rows until `stop()` is called."""
        self._move_to(RelayState.STANDBY)
        try:
            with psycopg.connect(for_libpq(self._settings.database_url), autocommit=True) as conn:
                if not self._wait_for_lock(conn):
                    return
                self._move_to(RelayState.ACTIVE)
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._relay_until_stopped(conn)
        except psycopg.OperationalError as exc:
            raise RelayError(
                f"lost the outbox database: {exc}; unsent rows stay in the outbox "
                "and will be sent when a relay runs again"
            ) from exc
        finally:
            remaining = self._producer.flush(FLUSH_TIMEOUT_S)
            if remaining:
                log.warning(
                    "relay_flush_incomplete",
                    unacknowledged=remaining,
                    consequence="rows stay unsent and will be sent again: at least once",
                )
            self._move_to(RelayState.STOPPED)

    def _wait_for_lock(self, conn: psycopg.Connection[Any]) -> bool:
        while not self._stopping.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                return True
            self._stopping.wait(STANDBY_RETRY_S)
        return False

    def _relay_until_stopped(self, conn: psycopg.Connection[Any]) -> None:
        batch_size = self._settings.relay_batch_size
        while not self._stopping.is_set():
            sent = self.relay_once(conn)
            if sent < batch_size:
                self._wait_for_notify(conn)

    def _wait_for_notify(self, conn: psycopg.Connection[Any]) -> None:
        # Returns on the first NOTIFY, or after the poll interval when none arrives.
        for _ in conn.notifies(timeout=self._settings.relay_poll_interval_s, stop_after=1):
            pass

    def relay_once(self, conn: psycopg.Connection[Any]) -> int:
        """Produce one batch of unsent rows, mark the acknowledged ones sent, return their count.

        Raises `RelayError` when Kafka rejected a row; the rows acknowledged
        before it are marked sent, the rejected ones stay unsent.
        """
        rows = conn.execute(_SELECT_UNSENT, (self._settings.relay_batch_size,)).fetchall()
        if not rows:
            return 0

        batch = _Batch()
        for row in rows:
            self._produce(row, batch)
        remaining = self._producer.flush(FLUSH_TIMEOUT_S)

        if batch.acknowledged:
            conn.execute(_MARK_SENT, (batch.acknowledged,))
        self._count(len(batch.acknowledged))

        if remaining or batch.failures:
            first = batch.failures[0] if batch.failures else None
            raise RelayError(
                f"Kafka did not acknowledge {remaining + len(batch.failures)} of {len(rows)} rows"
                + (f"; first failure on outbox row {first[0]}: {first[1]}" if first else "")
                + "; they stay unsent and will be retried"
            )
        return len(batch.acknowledged)

    def _produce(self, row: Any, batch: _Batch) -> None:
        (
            row_id,
            event_id,
            topic,
            key,
            event_type,
            tenant_id,
            subject,
            occurred_at,
            value,
            extra,
        ) = row
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", str(event_id).encode()),
            ("ce_source", f"/tenants/{tenant_id}".encode()),
            ("ce_type", event_type.encode()),
            ("ce_subject", subject.encode()),
            ("ce_time", occurred_at.isoformat().encode()),
            ("content-type", b"application/json"),
        ]
        headers.extend((name, str(header).encode()) for name, header in (extra or {}).items())
        self._producer.produce(
            f"{self._settings.topic_prefix}{topic}",
            value=value.encode(),
            key=key.encode(),
            headers=headers,
            on_delivery=functools.partial(_record_delivery, batch, row_id),
        )

    def _count(self, sent: int) -> None:
        self.stats.rows_sent += sent
        self.stats.batches += 1
        self.stats.last_batch_size = sent
        if self._on_batch is not None:
            self._on_batch(self.stats)


def _record_delivery(batch: _Batch, row_id: int, error: KafkaError | None, _: Message) -> None:
    if error is None:
        batch.acknowledged.append(row_id)
    else:
        batch.failures.append((row_id, error))
