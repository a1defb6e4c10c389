"""The durable inbox: one row per (tenant, principal, event) for every inbox recipient.

Every principal whose inbox channel receives an activity gets a row in
`inbox_notifications` with the same notification document, not only the
target principal. So any client that cannot recover a gap from Centrifugo's
history loads it from here. Rows are written in one statement per batch,
before publishing, and an existing row is left alone, so a replayed batch
inserts nothing twice. The one exception: a row that the enrichment worker
stored for the target principal without a versioned document gets the
notification document, so that every inbox row has the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

__all__ = ["InboxRow", "InboxWriter"]

_INSERT = """
INSERT INTO inbox_notifications (tenant_id, principal_id, event_id, action, notification)
SELECT tenant_id, principal_id, event_id, action, notification::jsonb
FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[])
    AS r(tenant_id, principal_id, event_id, action, notification)
ON CONFLICT (tenant_id, principal_id, event_id) DO UPDATE
    SET notification = EXCLUDED.notification
    WHERE inbox_notifications.notification->>'schema_version' IS NULL
"""


@dataclass(frozen=True)
class InboxRow:
    """One durable notification of one principal."""

    tenant_id: UUID
    principal_id: UUID
    event_id: UUID
    action: str
    notification_json: str


class InboxWriter:
    """Inserts inbox rows through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def store(self, rows: Sequence[InboxRow]) -> int:
        """Insert `rows`, skipping those already stored; return how many were written."""
        if not rows:
            return 0
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(
                _INSERT,
                [row.tenant_id for row in rows],
                [row.principal_id for row in rows],
                [row.event_id for row in rows],
                [row.action for row in rows],
                [row.notification_json for row in rows],
            )
        return int(status.rsplit(" ", 1)[-1])
