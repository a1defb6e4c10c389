"""Resolving a batch of decoded activities, and storing the target principals' inbox rows.

`BatchResolver` is the enrichment agent's work without Kafka: invalidate the
cache from the batch's own activities, load the reference data the batch
needs with set-based queries, then apply the watcher rules to each activity
in memory. The benchmark and the tests drive it directly.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import structlog
from activity_schemas import ActivityEvent, Delivery
from activity_schemas.errors import ActivityPipelineError

from activity_streams.errors import ReferenceDataError
from activity_streams.reference import ReferenceStore, TenantKey
from activity_streams.watchers import DEFAULT_RULES, Rules, chat_channel_id, invitee, resolve

__all__ = ["BatchResolver", "HeapPolicy", "Unresolvable", "store_inbox_notifications"]

log = structlog.get_logger(__name__)

_INSERT_INBOX = """
INSERT INTO inbox_notifications (tenant_id, principal_id, event_id, action, notification)
SELECT q.tenant_id, q.principal_id, q.event_id, q.action, q.notification::jsonb
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
    AS q(tenant_id, principal_id, event_id, action, notification)
ON CONFLICT (tenant_id, principal_id, event_id) DO NOTHING
"""


FREEZE_BATCHES = 200
"""Batches between two full garbage collections; see `HeapPolicy`."""


class HeapPolicy:
    """Keeps Python's cyclic garbage collector off the reference cache.

    The cache holds millions of long-lived objects, and every full collection
    walked them all, which made decoding five times slower in the benchmark.
    After each batch, the objects alive are moved out of the collector's sight
    (`gc.freeze()`). Every `FREEZE_BATCHES` batches they are handed back
    (`gc.unfreeze()`), so cyclic garbage among them is still collected.
    """

    def __init__(self) -> None:
        self._batches = 0

    def after_batch(self) -> None:
        """Freeze the objects alive now, or every `FREEZE_BATCHES` batches unfreeze them all."""
        self._batches += 1
        if self._batches % FREEZE_BATCHES == 0:
            gc.unfreeze()
        else:
            gc.freeze()


@dataclass(frozen=True)
class Unresolvable:
    """An activity the rules could not be applied to, with the reason for the dead-letter topic."""

    reason: str


class BatchResolver:
    """Turns batches of activities into deliveries with a fixed number of queries per batch."""

    def __init__(self, store: ReferenceStore, rules: Rules = DEFAULT_RULES) -> None:
        self.store = store
        self.rules = rules

    async def resolve(self, activities: Sequence[ActivityEvent]) -> list[Delivery | Unresolvable]:
        """Return one delivery, or the reason it cannot be made, per activity, in order.

        Raises `ReferenceDataError` when a PostgreSQL query fails. Nothing is
        half-done then, so the caller may retry the whole batch.
        """
        self.store.invalidate(activities)

        resources: set[TenantKey] = set()
        chats: set[TenantKey] = set()
        for activity in activities:
            resources.add((activity.tenant_id, activity.resource.id))
            conversation = chat_channel_id(activity)
            if isinstance(conversation, UUID):
                chats.add((activity.tenant_id, conversation))
        snapshot = await self.store.load(resources, chats)

        outcomes: list[Delivery | Unresolvable] = []
        for activity in activities:
            try:
                outcomes.append(resolve(activity, snapshot, self.rules).delivery)
            except ActivityPipelineError as exc:
                outcomes.append(Unresolvable(f"{type(exc).__name__}: {exc}"))
            except Exception as exc:
                # A defect hit by one activity must not block its partition: dead-letter it.
                log.exception("activity_resolution_crashed", event_id=str(activity.event_id))
                outcomes.append(Unresolvable(f"unexpected {type(exc).__name__}: {exc}"))
        return outcomes


def _inbox_row(delivery: Delivery) -> tuple[UUID, UUID, UUID, str, str] | None:
    event = delivery.event
    target = invitee(event)
    if target is None or not any(r.principal_id == target for r in delivery.recipients):
        return None
    notification = {
        "event_id": str(event.event_id),
        "action": event.action,
        "time": event.time.isoformat(),
        "actor": {"id": str(event.actor.id), "display_name": event.actor.display_name},
        "resource": {"id": str(event.resource.id), "type": event.resource.type},
        "ui": event.ui.model_dump(mode="json") if event.ui is not None else None,
    }
    return (event.tenant_id, target, event.event_id, event.action, json.dumps(notification))


async def store_inbox_notifications(pool: asyncpg.Pool, deliveries: Sequence[Delivery]) -> int:
    """Store one durable inbox row per target principal of `deliveries`; return rows offered.

    Idempotent on (tenant, principal, event id): a re-processed batch stores nothing new.
    """
    rows = [row for row in map(_inbox_row, deliveries) if row is not None]
    if not rows:
        return 0

    columns = list(zip(*rows, strict=True))
    try:
        async with pool.acquire() as conn:
            await conn.execute(_INSERT_INBOX, *(list(column) for column in columns))
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise ReferenceDataError(
            f"storing {len(rows)} inbox notifications failed ({type(exc).__name__}: {exc}); "
            "check that PostgreSQL at ACTIVITY_DATABASE_URL is up and migrated"
        ) from exc
    return len(rows)
