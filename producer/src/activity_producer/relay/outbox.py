"""The relay's SQL on the outbox table: poll unsent rows, mark them sent, clean up, observe.

Every statement here runs in autocommit on the relay's own connection. So the
relay keeps no transaction open between round trips, and each poll sees every
transaction committed before it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

__all__ = [
    "SELECT_UNSENT",
    "OpenTransaction",
    "OutboxRow",
    "OutboxSample",
    "delete_acknowledged",
    "delete_sent_rows",
    "mark_dead_lettered",
    "mark_sent",
    "oldest_open_transaction",
    "sample_outbox",
    "select_unsent",
]

SELECT_UNSENT = """
    SELECT id, event_id::text, topic, message_key, event_type, tenant_id::text, subject,
           to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
           payload::text, nullif(headers, '{}'::jsonb)::text,
           extract(epoch FROM created_at)::float8
    FROM activity_outbox
    WHERE sent_at IS NULL
    ORDER BY id
    LIMIT %s
"""
"""The poll: the oldest committed unsent rows, read through the partial index on unsent rows.

Columns come as text the record uses as it is (ids, the RFC 3339 time, the
JSON documents), which halves the client's decoding time of a batch.
"""

_MARK_SENT = "UPDATE activity_outbox SET sent_at = clock_timestamp() WHERE id = ANY(%s)"

_DELETE_ACKNOWLEDGED = "DELETE FROM activity_outbox WHERE id = ANY(%s)"

_MARK_DEAD_LETTERED = """
    UPDATE activity_outbox AS o
    SET sent_at = clock_timestamp(), dead_letter_reason = d.reason
    FROM unnest(%s::bigint[], %s::text[]) AS d(id, reason)
    WHERE o.id = d.id
"""

# Reads at most `limit` rows from the head of the primary key, so that one
# statement stays bounded however many recent rows the retention keeps.
_DELETE_SENT = """
    DELETE FROM activity_outbox
    WHERE id IN (
        SELECT id FROM (
            SELECT id, sent_at FROM activity_outbox ORDER BY id LIMIT %(limit)s
        ) AS head
        WHERE sent_at < clock_timestamp() - make_interval(secs => %(retention_s)s)
    )
"""

UNSENT_COUNT_CAP = 1_000_000
"""Most unsent rows counted per sample: the count is an index-only scan that grows with it."""

_SAMPLE = f"""
    SELECT
        (SELECT extract(epoch FROM clock_timestamp() - created_at)
         FROM activity_outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1),
        (SELECT count(*) FROM (
            SELECT 1 FROM activity_outbox WHERE sent_at IS NULL LIMIT {UNSENT_COUNT_CAP}
        ) AS capped)
"""

_OLDEST_TRANSACTION = """
    SELECT pid, application_name, state, extract(epoch FROM clock_timestamp() - xact_start)
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND xact_start IS NOT NULL
      AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
    ORDER BY xact_start
    LIMIT 1
"""


class OutboxRow(NamedTuple):
    """One unsent outbox row as the poll reads it, in the text forms the record uses."""

    id: int
    event_id: str
    topic: str
    message_key: str
    event_type: str
    tenant_id: str
    subject: str
    occurred_at: str
    """RFC 3339 time in UTC."""
    value: str
    headers: str | None
    """The row's extra headers as a JSON object, or None when it has none."""
    created_at: float
    """When the row was inserted, in seconds since the epoch."""


@dataclass(frozen=True)
class OutboxSample:
    """How far behind the relay is: the oldest unsent row's age and the unsent rows."""

    oldest_unsent_age_s: float
    unsent_rows: int


@dataclass(frozen=True)
class OpenTransaction:
    """The oldest open transaction in the outbox database, other than the relay's."""

    pid: int
    application_name: str
    state: str
    age_s: float


def select_unsent(conn: psycopg.Connection[Any], limit: int) -> list[OutboxRow]:
    """Return up to `limit` committed unsent rows, lowest id first."""
    rows = conn.execute(SELECT_UNSENT, (limit,)).fetchall()
    return list(map(OutboxRow._make, rows))


def mark_sent(conn: psycopg.Connection[Any], row_ids: list[int]) -> None:
    """Set `sent_at` on the rows whose records Kafka acknowledged."""
    if row_ids:
        conn.execute(_MARK_SENT, (row_ids,))


def delete_acknowledged(conn: psycopg.Connection[Any], row_ids: list[int]) -> None:
    """Delete the rows whose records Kafka acknowledged: the same step as marking, done cheaper.

    A delete writes no new row version, so it costs less than half of the update
    that marks a batch sent, and leaves nothing for the cleanup.
    """
    if row_ids:
        conn.execute(_DELETE_ACKNOWLEDGED, (row_ids,))


def mark_dead_lettered(conn: psycopg.Connection[Any], reasons: dict[int, str]) -> None:
    """Set `sent_at` and the reason on rows whose dead-letter records Kafka acknowledged."""
    if reasons:
        conn.execute(_MARK_DEAD_LETTERED, (list(reasons), list(reasons.values())))


def delete_sent_rows(
    conn: psycopg.Connection[Any], retention_s: float, batch_size: int, max_batches: int
) -> int:
    """Delete rows sent more than `retention_s` ago, `batch_size` per statement; return the count.

    Stops after `max_batches` statements, or at the first one that deletes
    nothing: the head of the outbox is then unsent or still within retention.
    """
    deleted = 0
    for _ in range(max_batches):
        cursor = conn.execute(_DELETE_SENT, {"limit": batch_size, "retention_s": retention_s})
        if cursor.rowcount <= 0:
            break
        deleted += cursor.rowcount
    return deleted


def sample_outbox(conn: psycopg.Connection[Any]) -> OutboxSample:
    """Return the age of the oldest unsent row (0 when none) and the unsent rows (capped)."""
    row = conn.execute(_SAMPLE).fetchone()
    age, count = row if row is not None else (None, 0)
    return OutboxSample(float(age or 0.0), int(count))


def oldest_open_transaction(conn: psycopg.Connection[Any]) -> OpenTransaction | None:
    """Return the oldest transaction holding a snapshot or an xid in this database, if any."""
    row = conn.execute(_OLDEST_TRANSACTION).fetchone()
    if row is None:
        return None
    pid, application_name, state, age = row
    return OpenTransaction(int(pid), application_name or "", state or "", float(age))
