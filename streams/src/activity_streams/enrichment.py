"""The enrichment agent: turns each activity event into a delivery and an audit record.

A batch of events (`stream.noack_take`) is resolved with a handful of
set-based queries against cached reference data; each event then yields one
record on the deliveries topic and one on the audit topic, both keyed like
the input and carrying the event id in the `ce_id` header. A record that
cannot be decoded or resolved goes to the dead-letter topic with its reason,
and the stream moves on.

Batches overlap by one: while Kafka acknowledges the records of one batch,
the agent resolves the next. A batch's events are acknowledged to Faust, so
their offsets committed, only after Kafka acknowledged every record of that
batch and of the batches before it, so a crash re-processes a batch and never
skips one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

import asyncpg
import faust
import structlog
from activity_schemas import ActivityEvent, AuditRecord, Delivery
from activity_schemas.topics import AUDIT_TOPIC, DEAD_LETTER_TOPIC, DELIVERIES_TOPIC
from faust.types import EventT, StreamT
from pydantic import ValidationError

from activity_streams.acks import ack_if_current
from activity_streams.app import app, events_topic, settings
from activity_streams.errors import ReferenceDataError
from activity_streams.output import (
    MAX_RECORD_BYTES,
    OutputProducer,
    OutputRecord,
    output_config,
)
from activity_streams.reference import ReferenceStore
from activity_streams.resolution import (
    BatchResolver,
    HeapPolicy,
    Unresolvable,
    store_inbox_notifications,
)
from activity_streams.watchers import Rules

__all__ = ["enrich"]

_T = TypeVar("_T")

log = structlog.get_logger(__name__)

POOL_SIZE = 4
"""Database connections per worker: the batch's two concurrent queries, with room to spare."""

MAX_RETRY_BACKOFF_S = 30.0
"""Maximum pause in seconds between attempts at a batch while PostgreSQL or Kafka fails."""

STOP_WAIT_S = 30.0
"""How long a stopping agent waits for the records of its last batch to be acknowledged."""

MAX_REASON_LENGTH = 500
"""Maximum dead-letter reason header length in characters; validation errors run long."""


def _dead_letter(event: EventT, reason: str) -> OutputRecord:
    log.error(
        "event_dead_lettered",
        topic=event.message.topic,
        partition=event.message.partition,
        offset=event.message.offset,
        reason=reason,
    )
    return OutputRecord(
        settings.topic(DEAD_LETTER_TOPIC),
        event.key,
        event.value,
        [
            ("dead_letter_reason", reason[:MAX_REASON_LENGTH].encode()),
            ("dead_letter_source", f"{event.message.topic}:{event.message.partition}".encode()),
            ("dead_letter_offset", str(event.message.offset).encode()),
        ],
    )


def _decode(event: EventT) -> ActivityEvent | str:
    """Return the activity, or why the value is not one (without the value itself)."""
    try:
        return ActivityEvent.model_validate_json(event.value)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        location = ".".join(str(part) for part in first["loc"]) or "value"
        return (
            f"value is not a valid ActivityEvent document: {exc.error_count()} error(s), "
            f"first at {location}: {first['msg']}"
        )


async def _resolve_with_retries(
    resolver: BatchResolver, pool: asyncpg.Pool, activities: Sequence[ActivityEvent]
) -> list[Delivery | Unresolvable]:
    """Resolve and store inbox rows, retrying with backoff; give up with a reason per activity."""
    backoff_s = settings.enrichment_retry_backoff_s
    last_error: ReferenceDataError | None = None
    for attempt in range(1, settings.enrichment_max_attempts + 1):
        try:
            outcomes = await resolver.resolve(activities)
            await store_inbox_notifications(pool, [o for o in outcomes if isinstance(o, Delivery)])
            return outcomes
        except ReferenceDataError as exc:
            log.warning(
                "batch_resolution_failed",
                attempt=attempt,
                max_attempts=settings.enrichment_max_attempts,
                error=str(exc),
            )
            last_error = exc
            if attempt < settings.enrichment_max_attempts:
                await asyncio.sleep(backoff_s)
                backoff_s *= 2
    reason = (
        f"resolution failed {settings.enrichment_max_attempts} times: {last_error}; "
        "replay this record once PostgreSQL answers again"
    )
    return [Unresolvable(reason) for _ in activities]


def _cloudevents_headers(activity: ActivityEvent) -> list[tuple[str, str | bytes | None]]:
    """Return the CloudEvents binary-mode headers the relay also puts on the events topic."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", str(activity.event_id).encode()),
        ("ce_source", f"/tenants/{activity.tenant_id}".encode()),
        ("ce_type", activity.action.encode()),
        ("ce_subject", str(activity.resource.id).encode()),
        ("ce_time", activity.time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]


async def _build_outputs(
    resolver: BatchResolver, pool: asyncpg.Pool, batch: Sequence[EventT]
) -> list[OutputRecord]:
    """Decode, resolve and encode a batch: its deliveries, audit records and dead letters."""
    records: list[OutputRecord] = []
    decoded: list[tuple[EventT, ActivityEvent]] = []
    for event in batch:
        activity = _decode(event)
        if isinstance(activity, str):
            records.append(_dead_letter(event, activity))
            continue
        decoded.append((event, activity))

    outcomes = await _resolve_with_retries(resolver, pool, [a for _, a in decoded])

    processed_at = datetime.now(UTC)
    deliveries_topic = settings.topic(DELIVERIES_TOPIC)
    audit_topic = settings.topic(AUDIT_TOPIC)
    for (event, activity), outcome in zip(decoded, outcomes, strict=True):
        if isinstance(outcome, Unresolvable):
            records.append(_dead_letter(event, outcome.reason))
            continue
        audit = AuditRecord.model_construct(
            event=activity,
            recipients=tuple(r.principal_id for r in outcome.recipients),
            processed_at=processed_at,
        )
        headers = _cloudevents_headers(activity)
        outputs = (
            OutputRecord(deliveries_topic, event.key, outcome.model_dump_json().encode(), headers),
            OutputRecord(audit_topic, event.key, audit.model_dump_json().encode(), headers),
        )
        oversize = max(output.size for output in outputs)
        if oversize > MAX_RECORD_BYTES:
            reason = (
                f"its delivery or audit record has {oversize:,} bytes, more than Kafka accepts "
                f"({MAX_RECORD_BYTES:,}); trim the payload or the watchers of the resource"
            )
            records.append(_dead_letter(event, reason))
            continue
        records.extend(outputs)
    return records


async def _with_retries(step: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
    """Run `attempt` until it succeeds, backing off; a batch is never skipped.

    Every output is idempotent on the event id, so a batch done twice is harmless.
    """
    backoff_s = settings.enrichment_retry_backoff_s
    while True:
        try:
            return await attempt()
        except Exception as exc:
            log.error(
                "batch_step_failed",
                step=step,
                error_type=type(exc).__name__,
                error=str(exc),
                retry_in_s=backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, MAX_RETRY_BACKOFF_S)


async def _send_then_ack(
    stream: StreamT[bytes],
    output: OutputProducer,
    batch: Sequence[EventT],
    records: Sequence[OutputRecord],
) -> None:
    """Send a batch's records until Kafka acknowledged them all, then ack its events to Faust.

    Events fetched before a rebalance that came meanwhile are not acked: they are read again.
    """
    await _with_retries("send", partial(output.send, records))

    acked = 0
    for event in batch:
        acked += await ack_if_current(app, stream, event)
    if acked < len(batch):
        log.info("stale_events_left_for_redelivery", events=len(batch) - acked)
    log.debug("batch_enriched", events=len(batch), records=len(records))


async def _finish(in_flight: asyncio.Task[None] | None) -> None:
    """Let the last batch's records be acknowledged; its events are re-processed otherwise."""
    if in_flight is None:
        return
    done, _ = await asyncio.wait([in_flight], timeout=STOP_WAIT_S)
    if not done:
        in_flight.cancel()
        log.warning("last_batch_unacknowledged_at_stop", wait_s=STOP_WAIT_S)


@app.agent(events_topic)
async def enrich(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Resolve each batch of activity events and produce deliveries and audit records."""
    # TODO: one worker drains about 3,100 activities/s on a 2-core machine, below 10,000/s:
    # Faust's path alone moves about 9,800 events/s (`activity bench enrichment --through-faust`).
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=POOL_SIZE)
    rules = Rules(settings.mutation_actions, settings.critical_actions)
    resolver = BatchResolver(ReferenceStore(pool, settings.reference_cache_ttl_s), rules)
    heap = HeapPolicy()
    output = OutputProducer(output_config(settings.kafka_bootstrap_servers))
    output.start()
    in_flight: asyncio.Task[None] | None = None
    try:
        async for batch in stream.noack_take(
            settings.enrichment_batch_size, within=settings.enrichment_batch_window_s
        ):
            records = await _with_retries("resolve", partial(_build_outputs, resolver, pool, batch))
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.create_task(_send_then_ack(stream, output, batch, records))
            heap.after_batch()
            yield len(batch)
    finally:
        await _finish(in_flight)
        output.close()
        await pool.close()
