"""The enrichment agent: turns each activity event into a delivery and an audit record.

A batch of events (`stream.take_events`) is resolved with a fixed number of
set-based queries; each event then yields one record on the deliveries topic
and one on the audit topic, both keyed like the input. An event that cannot
be decoded goes to the dead-letter topic with its reason, and the stream
moves on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import faust
import structlog
from activity_schemas import ActivityEvent, AuditRecord
from faust.types import EventT
from pydantic import ValidationError

from activity_streams.app import (
    app,
    audit_topic,
    dead_letter_topic,
    deliveries_topic,
    events_topic,
    settings,
)
from activity_streams.reference import ReferenceStore, TenantKey
from activity_streams.watchers import chat_channel_id, resolve_delivery

__all__ = ["enrich"]

log = structlog.get_logger(__name__)

POOL_SIZE = 4
"""Database connections per worker: the batch's two concurrent queries, with room to spare."""


async def _dead_letter(event: EventT, reason: str) -> None:
    await dead_letter_topic.send(
        key=event.key,
        value=event.value,
        headers={
            "dead_letter_reason": reason.encode(),
            "dead_letter_source": f"{event.message.topic}:{event.message.partition}".encode(),
            "dead_letter_offset": str(event.message.offset).encode(),
        },
    )
    log.error(
        "event_dead_lettered",
        topic=event.message.topic,
        partition=event.message.partition,
        offset=event.message.offset,
        reason=reason,
    )


def _decode(event: EventT) -> ActivityEvent | None:
    try:
        return ActivityEvent.model_validate_json(event.value)
    except ValidationError:
        return None


async def _resolve_batch(store: ReferenceStore, batch: Sequence[EventT]) -> int:
    decoded: list[tuple[EventT, ActivityEvent]] = []
    for event in batch:
        activity = _decode(event)
        if activity is None:
            await _dead_letter(event, "value is not a valid ActivityEvent document")
            continue
        decoded.append((event, activity))

    resources: set[TenantKey] = {(a.tenant_id, a.resource.id) for _, a in decoded}
    chats: set[TenantKey] = set()
    for _, activity in decoded:
        conversation = chat_channel_id(activity)
        if isinstance(conversation, UUID):
            chats.add((activity.tenant_id, conversation))
    snapshot = await store.load(resources, chats)

    processed_at = datetime.now(UTC)
    for event, activity in decoded:
        delivery = resolve_delivery(activity, snapshot)
        audit = AuditRecord(
            event=activity,
            recipients=tuple(r.principal_id for r in delivery.recipients),
            processed_at=processed_at,
        )
        await deliveries_topic.send(key=event.key, value=delivery.model_dump_json().encode())
        await audit_topic.send(key=event.key, value=audit.model_dump_json().encode())
    return len(decoded)


@app.agent(events_topic)
async def enrich(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Resolve each batch of activity events and produce deliveries and audit records."""
    # TODO: cache reference data between batches and invalidate it from the
    # pipeline's own resource, role binding, subscription and preference activities.
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=POOL_SIZE)
    store = ReferenceStore(pool)
    try:
        async for batch in stream.take_events(
            settings.enrichment_batch_size, within=settings.enrichment_batch_window_s
        ):
            resolved = await _resolve_batch(store, batch)
            log.debug("batch_enriched", events=len(batch), resolved=resolved)
            yield resolved
    finally:
        await pool.close()
