"""Record activities in the caller's transaction, together with their outbox rows.

One statement inserts the activity and, only when the insert took place, its
outbox row; the unique idempotency key (tenant, correlation id, action,
resource) makes a second recording return the first one and write nothing,
even when both run at once in separate transactions. Nothing is committed
here: the activity commits or rolls back with the caller's own change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from activity_schemas import ActivityEnvelope, ActivityEvent, ActorRef, ResourceRef
from activity_schemas.topics import EVENTS_TOPIC
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from activity_producer.policy import PayloadPolicy

__all__ = [
    "ActivityRecorder",
    "RecordedActivity",
    "configure_recording",
    "message_key",
    "record_activity_with_outbox",
    "record_activity_with_outbox_sync",
    "tx_activity",
    "tx_activity_sync",
]

T = TypeVar("T")

_INSERT = text(
    """
    WITH inserted AS (
        INSERT INTO activities (
            id, tenant_id, correlation_id, action, resource_id, resource_type,
            actor_principal_id, target_principal_id, visibility, payload,
            occurred_at, recorded_at
        )
        VALUES (
            :event_id, :tenant_id, :correlation_id, :action, :resource_id, :resource_type,
            :actor_principal_id, :target_principal_id, :visibility, CAST(:payload AS jsonb),
            :occurred_at, :recorded_at
        )
        ON CONFLICT (tenant_id, correlation_id, action, resource_id) DO NOTHING
        RETURNING id
    )
    INSERT INTO activity_outbox (
        event_id, topic, message_key, event_type, tenant_id, subject, occurred_at, payload
    )
    SELECT id, :topic, :message_key, :action, :tenant_id, :subject, :occurred_at,
           CAST(:document AS jsonb)
    FROM inserted
    RETURNING event_id
    """
)

_SELECT_EXISTING = text(
    """
    SELECT id, recorded_at FROM activities
    WHERE tenant_id = :tenant_id AND correlation_id = :correlation_id
      AND action = :action AND resource_id = :resource_id
    """
)


@dataclass(frozen=True)
class RecordedActivity:
    """The outcome of one recording: the activity's id and whether this call created it."""

    event_id: UUID
    recorded_at: datetime
    created: bool


def message_key(tenant_id: UUID, resource_id: UUID) -> str:
    """Return the Kafka key that keeps one resource's activities in order on one partition."""
    return f"{tenant_id}:{resource_id}"


class ActivityRecorder:
    """Records envelopes under one payload policy, onto one topic."""

    def __init__(self, policy: PayloadPolicy | None = None, topic: str = EVENTS_TOPIC) -> None:
        self.policy = policy if policy is not None else PayloadPolicy()
        self.topic = topic

    def _parameters(self, envelope: ActivityEnvelope) -> dict[str, Any]:
        payload, encoded_payload = self.policy.apply(envelope.payload)
        event_id = uuid4()
        recorded_at = datetime.now(UTC)
        event = ActivityEvent(
            event_id=event_id,
            tenant_id=envelope.tenant_id,
            time=envelope.created_at,
            recorded_at=recorded_at,
            correlation_id=envelope.correlation_id,
            actor=ActorRef(
                id=envelope.actor_principal_id,
                kind=envelope.actor_kind,
                display_name=envelope.actor_display_name,
            ),
            resource=ResourceRef(
                id=envelope.resource_id,
                type=envelope.resource_type,
                parent_id=envelope.resource_parent_id,
            ),
            action=envelope.action,
            target_principal_id=envelope.target_principal_id,
            visibility=envelope.visibility,
            payload=payload,
            authorization=envelope.authorization,
            ui=envelope.ui,
            targets=envelope.delivery_channels,
        )
        return {
            "event_id": event_id,
            "tenant_id": envelope.tenant_id,
            "correlation_id": envelope.correlation_id,
            "action": envelope.action,
            "resource_id": envelope.resource_id,
            "resource_type": envelope.resource_type,
            "actor_principal_id": envelope.actor_principal_id,
            "target_principal_id": envelope.target_principal_id,
            "visibility": envelope.visibility.value,
            "payload": encoded_payload,
            "occurred_at": envelope.created_at,
            "recorded_at": recorded_at,
            "topic": self.topic,
            "message_key": message_key(envelope.tenant_id, envelope.resource_id),
            "subject": str(envelope.resource_id),
            "document": event.model_dump_json(),
        }

    async def record(self, session: AsyncSession, envelope: ActivityEnvelope) -> RecordedActivity:
        """Record `envelope` in the session's transaction; see `record_activity_with_outbox`."""
        parameters = self._parameters(envelope)

        inserted = (await session.execute(_INSERT, parameters)).first()
        if inserted is not None:
            return RecordedActivity(parameters["event_id"], parameters["recorded_at"], True)

        existing = (await session.execute(_SELECT_EXISTING, parameters)).one()
        return RecordedActivity(existing.id, existing.recorded_at, False)

    def record_sync(self, session: Session, envelope: ActivityEnvelope) -> RecordedActivity:
        """Record `envelope` in the session's transaction; see `record_activity_with_outbox`."""
        parameters = self._parameters(envelope)

        inserted = session.execute(_INSERT, parameters).first()
        if inserted is not None:
            return RecordedActivity(parameters["event_id"], parameters["recorded_at"], True)

        existing = session.execute(_SELECT_EXISTING, parameters).one()
        return RecordedActivity(existing.id, existing.recorded_at, False)


_default_recorder = ActivityRecorder()


def configure_recording(policy: PayloadPolicy | None = None, topic: str = EVENTS_TOPIC) -> None:
    """Set the payload policy and topic that the module-level functions use from now on."""
    global _default_recorder
    _default_recorder = ActivityRecorder(policy, topic)


async def record_activity_with_outbox(
    session: AsyncSession, envelope: ActivityEnvelope
) -> RecordedActivity:
    """Record `envelope` and its outbox row in the session's current transaction.

    Calling it again with the same tenant, correlation id, action and resource
    returns the first activity with `created=False` and writes nothing. The
    caller commits; a rollback removes the activity with everything else.
    Raises `PayloadPolicyError` when the payload breaks the payload policy.
    """
    return await _default_recorder.record(session, envelope)


def record_activity_with_outbox_sync(
    session: Session, envelope: ActivityEnvelope
) -> RecordedActivity:
    """Record `envelope` with a synchronous session; same contract as the async form."""
    return _default_recorder.record_sync(session, envelope)


async def tx_activity(
    session: AsyncSession,
    envelope: ActivityEnvelope,
    domain_fn: Callable[[AsyncSession], Awaitable[T]],
) -> tuple[T | None, RecordedActivity]:
    """Run `domain_fn` and record its activity in one transaction.

    Opens a transaction, or a savepoint when one is already open, and commits
    it unless `domain_fn` raises. The activity is recorded first, so when it
    already exists `domain_fn` is skipped and the result is `None`.
    """
    scope = session.begin_nested() if session.in_transaction() else session.begin()
    async with scope:
        recorded = await _default_recorder.record(session, envelope)
        if not recorded.created:
            return None, recorded
        return await domain_fn(session), recorded


def tx_activity_sync(
    session: Session,
    envelope: ActivityEnvelope,
    domain_fn: Callable[[Session], T],
) -> tuple[T | None, RecordedActivity]:
    """Run `domain_fn` and record its activity in one transaction, with a synchronous session."""
    scope = session.begin_nested() if session.in_transaction() else session.begin()
    with scope:
        recorded = _default_recorder.record_sync(session, envelope)
        if not recorded.created:
            return None, recorded
        return domain_fn(session), recorded
