"""The durable inbox: list a principal's notifications newest first, and mark them read.

Pages are cut by an opaque cursor (the last row's time and event id), so a
notification stored while someone pages never shifts or repeats a page. Each
read records its activity through the outbox, like every other change.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from activity_schemas import ActivityEnvelope, DeliveryChannel, Visibility
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from activity_producer.errors import ProducerError
from activity_producer.recording import record_activity_with_outbox

__all__ = [
    "NOTIFICATIONS_READ_ALL",
    "NOTIFICATION_READ",
    "InboxError",
    "InboxPage",
    "InboxRow",
    "InvalidCursorError",
    "NotificationNotFoundError",
    "inbox_resource_id",
    "list_inbox",
    "mark_all_read",
    "mark_read",
]

NOTIFICATION_READ = "notification.read"
"""Action recorded when a principal reads one inbox notification."""

NOTIFICATIONS_READ_ALL = "notification.read_all"
"""Action recorded when a principal marks its whole inbox read."""

_INBOX_NAMESPACE = UUID("0b6f4a52-3d1e-5f7a-8c9b-2e4d6f8a0c1e")
"""Namespace of the stable resource ids that inbox activities are recorded under."""


class InboxError(ProducerError):
    """Raised when the inbox cannot be read or changed as asked."""


class InvalidCursorError(InboxError):
    """Raised when a paging cursor was not issued by this API or was altered."""

    field = "cursor"


class NotificationNotFoundError(InboxError):
    """Raised when the principal's inbox in the tenant contains no notification of that event."""


@dataclass(frozen=True)
class InboxRow:
    """One stored inbox notification."""

    event_id: UUID
    action: str
    notification: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


@dataclass(frozen=True)
class InboxPage:
    """One page of the inbox and the cursor of the next one."""

    rows: list[InboxRow]
    next_cursor: str | None


_COLUMNS = "event_id, action, notification, created_at, read_at"

# TODO: add an index on (tenant_id, principal_id, created_at, event_id) so that large
# inboxes page without sorting.
_PAGE = text(
    f"""
    SELECT {_COLUMNS} FROM inbox_notifications
    WHERE tenant_id = :tenant_id AND principal_id = :principal_id
      AND (NOT :unread_only OR read_at IS NULL)
      AND (CAST(:after_at AS timestamptz) IS NULL
           OR (created_at, event_id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
    ORDER BY created_at DESC, event_id DESC
    LIMIT :limit
    """
)

_MARK_READ = text(
    f"""
    WITH target AS (
        SELECT event_id, read_at AS read_before FROM inbox_notifications
        WHERE tenant_id = :tenant_id AND principal_id = :principal_id AND event_id = :event_id
        FOR UPDATE
    )
    UPDATE inbox_notifications n SET read_at = coalesce(n.read_at, clock_timestamp())
    FROM target
    WHERE n.tenant_id = :tenant_id AND n.principal_id = :principal_id
      AND n.event_id = target.event_id
    RETURNING {", ".join(f"n.{column}" for column in _COLUMNS.split(", "))},
              target.read_before IS NULL AS changed
    """
)

_MARK_ALL_READ = text(
    """
    UPDATE inbox_notifications SET read_at = clock_timestamp()
    WHERE tenant_id = :tenant_id AND principal_id = :principal_id AND read_at IS NULL
    """
)


def _encode_cursor(row: InboxRow) -> str:
    raw = json.dumps([row.created_at.isoformat(), str(row.event_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, event_id = json.loads(raw)
        after_at = datetime.fromisoformat(created_at)
        if after_at.tzinfo is None:
            raise ValueError("cursor time has no time zone")
        return after_at, UUID(event_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursorError(
            f"cursor {cursor[:80]!r} is not one this API issued; pass the `next_cursor` "
            "of the previous page unchanged, or omit it for the first page"
        ) from exc


def _row(row: Any) -> InboxRow:
    return InboxRow(row.event_id, row.action, row.notification, row.created_at, row.read_at)


async def list_inbox(
    session: AsyncSession,
    tenant_id: UUID,
    principal_id: UUID,
    *,
    limit: int,
    cursor: str | None = None,
    unread_only: bool = False,
) -> InboxPage:
    """Return one page of the principal's inbox in the tenant, newest first."""
    after_at, after_id = _decode_cursor(cursor) if cursor else (None, None)

    result = await session.execute(
        _PAGE,
        {
            "tenant_id": tenant_id,
            "principal_id": principal_id,
            "unread_only": unread_only,
            "after_at": after_at,
            "after_id": after_id,
            "limit": limit + 1,
        },
    )
    rows = [_row(row) for row in result]

    if len(rows) <= limit:
        return InboxPage(rows, None)
    return InboxPage(rows[:limit], _encode_cursor(rows[limit - 1]))


def _inbox_envelope(
    tenant_id: UUID, principal_id: UUID, action: str, resource_id: UUID, payload: dict[str, Any]
) -> ActivityEnvelope:
    return ActivityEnvelope(
        tenant_id=tenant_id,
        actor_principal_id=principal_id,
        resource_id=resource_id,
        resource_type="inbox",
        action=action,
        visibility=Visibility.PRIVATE,
        delivery_channels=(DeliveryChannel.INBOX,),
        payload=payload,
    )


def inbox_resource_id(tenant_id: UUID, principal_id: UUID, event_id: UUID | None = None) -> UUID:
    """Return the stable id that inbox activities are recorded under.

    The whole inbox of a principal has one id. Each notification has its own id,
    so reading several notifications in one workflow records one activity each.
    """
    suffix = "" if event_id is None else f":{event_id}"
    return uuid.uuid5(_INBOX_NAMESPACE, f"{tenant_id}:{principal_id}{suffix}")


async def mark_read(
    session: AsyncSession, tenant_id: UUID, principal_id: UUID, event_id: UUID
) -> InboxRow:
    """Mark one notification read, recording `notification.read` when it was unread.

    Reading it again keeps the first read time and records nothing. Raises
    `NotificationNotFoundError` when the inbox contains no such notification.
    """
    keys = {"tenant_id": tenant_id, "principal_id": principal_id, "event_id": event_id}

    row = (await session.execute(_MARK_READ, keys)).first()
    if row is None:
        raise NotificationNotFoundError(
            f"no notification of event {event_id} in the inbox of principal {principal_id} in "
            f"tenant {tenant_id}; list the inbox with GET /notifications"
        )

    if row.changed:
        await record_activity_with_outbox(
            session,
            _inbox_envelope(
                tenant_id,
                principal_id,
                NOTIFICATION_READ,
                inbox_resource_id(tenant_id, principal_id, event_id),
                {"event_id": str(event_id)},
            ),
        )
    return _row(row)


async def mark_all_read(session: AsyncSession, tenant_id: UUID, principal_id: UUID) -> int:
    """Mark every unread notification read; record `notification.read_all` when any was.

    Returns how many notifications changed.
    """
    result = await session.execute(
        _MARK_ALL_READ, {"tenant_id": tenant_id, "principal_id": principal_id}
    )
    marked: int = result.rowcount  # type: ignore[attr-defined]

    if marked:
        await record_activity_with_outbox(
            session,
            _inbox_envelope(
                tenant_id,
                principal_id,
                NOTIFICATIONS_READ_ALL,
                inbox_resource_id(tenant_id, principal_id),
                {"marked_read": marked},
            ),
        )
    return marked
