"""The enrichment agent: turns each activity event into a delivery and an audit record.

A batch of events (`stream.take_events`) is resolved with a handful of
set-based queries against cached reference data; each event then yields one
record on the deliveries topic and one on the audit topic, both keyed like
the input and carrying the event id in the `ce_id` header. A record that
cannot be decoded or resolved goes to the dead-letter topic with its reason,
and the stream moves on. Faust commits a batch's offsets only after this
agent has waited for Kafka to acknowledge every output of the batch, so a
crash re-processes a batch and never skips one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime

import asyncpg
import faust
import structlog
from activity_schemas import ActivityEvent, AuditRecord, Delivery
from activity_schemas.topics import AUDIT_TOPIC, DELIVERIES_TOPIC
from faust.types import EventT, RecordMetadata
from pydantic import ValidationError

from activity_streams.app import app, dead_letter_topic, events_topic, settings
from activity_streams.errors import ReferenceDataError
from activity_streams.reference import ReferenceStore
from activity_streams.resolution import (
    BatchResolver,
    HeapPolicy,
    Unresolvable,
    store_inbox_notifications,
)
from activity_streams.watchers import Rules

__all__ = ["enrich"]

log = structlog.get_logger(__name__)

POOL_SIZE = 4
"""Database connections per worker: the batch's two concurrent queries, with room to spare."""

MAX_OUTPUT_BACKOFF_S = 30.0
"""Maximum pause in seconds between attempts to produce a batch's outputs while Kafka fails."""

MAX_REASON_LENGTH = 500
"""Maximum dead-letter reason header length in characters; validation errors run long."""


def _dead_letter(event: EventT, reason: str) -> Awaitable[Awaitable[RecordMetadata]]:
    log.error(
        "event_dead_lettered",
        topic=event.message.topic,
        partition=event.message.partition,
        offset=event.message.offset,
        reason=reason,
    )
    return dead_letter_topic.send(
        key=event.key,
        value=event.value,
        headers={
            "dead_letter_reason": reason[:MAX_REASON_LENGTH].encode(),
            "dead_letter_source": f"{event.message.topic}:{event.message.partition}".encode(),
            "dead_letter_offset": str(event.message.offset).encode(),
        },
    )


async def _produce(
    topic: str, key: bytes | None, value: str, headers: list[tuple[str, bytes]]
) -> Awaitable[RecordMetadata]:
    """Hand one record to the worker's Kafka producer; return the future of its acknowledgement.

    It calls the producer directly, not `Topic.send`: skipping Faust's send path
    tripled the worker's end-to-end rate in `activity bench enrichment --through-faust`.
    """
    return await app.producer.send(settings.topic(topic), key, value.encode(), None, None, headers)


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


def _cloudevents_headers(activity: ActivityEvent) -> list[tuple[str, bytes]]:
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


async def _enrich_batch(
    resolver: BatchResolver, pool: asyncpg.Pool, batch: Sequence[EventT]
) -> int:
    pending: list[Awaitable[RecordMetadata]] = []
    decoded: list[tuple[EventT, ActivityEvent]] = []
    for event in batch:
        activity = _decode(event)
        if isinstance(activity, str):
            pending.append(await _dead_letter(event, activity))
            continue
        decoded.append((event, activity))

    outcomes = await _resolve_with_retries(resolver, pool, [a for _, a in decoded])

    processed_at = datetime.now(UTC)
    delivered = 0
    for (event, activity), outcome in zip(decoded, outcomes, strict=True):
        if isinstance(outcome, Unresolvable):
            pending.append(await _dead_letter(event, outcome.reason))
            continue
        audit = AuditRecord.model_construct(
            event=activity,
            recipients=tuple(r.principal_id for r in outcome.recipients),
            processed_at=processed_at,
        )
        headers = _cloudevents_headers(activity)
        delivery_json = outcome.model_dump_json()
        pending.append(await _produce(DELIVERIES_TOPIC, event.key, delivery_json, headers))
        pending.append(await _produce(AUDIT_TOPIC, event.key, audit.model_dump_json(), headers))
        delivered += 1

    # Faust acks the batch's offsets when this agent requests the next batch, so every
    # output must be acknowledged by Kafka before that.
    await asyncio.gather(*pending)
    return delivered


async def _enrich_until_produced(
    resolver: BatchResolver, pool: asyncpg.Pool, batch: Sequence[EventT]
) -> int:
    """Enrich a batch, trying again until its outputs are produced; never skip a batch.

    Outputs are idempotent on the event id, so a batch produced twice is harmless.
    """
    backoff_s = settings.enrichment_retry_backoff_s
    while True:
        try:
            return await _enrich_batch(resolver, pool, batch)
        except Exception as exc:
            log.error(
                "batch_outputs_failed",
                events=len(batch),
                error_type=type(exc).__name__,
                error=str(exc),
                retry_in_s=backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, MAX_OUTPUT_BACKOFF_S)


@app.agent(events_topic)
async def enrich(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Resolve each batch of activity events and produce deliveries and audit records."""
    # TODO: a worker invalidates its cache only from the partitions it consumes; changes
    # announced on another worker's partitions reach it within `reference_cache_ttl_s`.
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=POOL_SIZE)
    rules = Rules(settings.mutation_actions, settings.critical_actions)
    resolver = BatchResolver(ReferenceStore(pool, settings.reference_cache_ttl_s), rules)
    heap = HeapPolicy()
    try:
        async for batch in stream.take_events(
            settings.enrichment_batch_size, within=settings.enrichment_batch_window_s
        ):
            delivered = await _enrich_until_produced(resolver, pool, batch)
            log.debug("batch_enriched", events=len(batch), delivered=delivered)
            heap.after_batch()
            yield delivered
    finally:
        await pool.close()
