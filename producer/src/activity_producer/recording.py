"""Record activities in the caller's transaction, together with their outbox rows.

One statement inserts the activity and, only when the insert took place, its
outbox row. The unique idempotency key (tenant, correlation id, action,
resource) makes a second recording return the first one and write nothing,
even when both run at once in separate transactions. Nothing is committed
here, so the activity commits or rolls back with the caller's own change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID, uuid4

import structlog
from activity_schemas import ActivityEnvelope
from activity_schemas.catalogue import ActionCatalogue, default_catalogue
from activity_schemas.event import event_from_envelope
from activity_schemas.topics import EVENTS_TOPIC
from pydantic import ValidationError
from sqlalchemy import Connection, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from activity_producer.errors import EnvelopeError, ProducerError, UnknownActionError
from activity_producer.policy import PayloadPolicy

__all__ = [
    "ActivityRecorder",
    "RecordedActivity",
    "UnknownActions",
    "configure_recording",
    "current_recorder",
    "message_key",
    "record_activity_with_outbox",
    "record_activity_with_outbox_sync",
    "tx_activity",
    "tx_activity_sync",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")

AsyncExecutor = AsyncSession | AsyncConnection
SyncExecutor = Session | Connection

UNKNOWN_ACTIONS_LOGGED_MAX = 1000
"""Maximum distinct unknown action names that one recorder logs, to bound its memory."""

SHOWN_VALUE_MAX_CHARS = 80
"""Maximum characters of an invalid value quoted in an `EnvelopeError` message."""

_INSERT = text(
    r"""
    WITH inserted AS (
        INSERT INTO activities (
            id, tenant_id, correlation_id, action, resource_id, resource_type,
            actor_principal_id, target_principal_id, visibility, payload,
            occurred_at, recorded_at
        )
        VALUES (
            :event_id, :tenant_id, :correlation_id, :action, :resource_id, :resource_type,
            :actor_principal_id, :target_principal_id, :visibility, CAST(:payload AS jsonb),
            :occurred_at, clock_timestamp()
        )
        ON CONFLICT (tenant_id, correlation_id, action, resource_id) DO NOTHING
        RETURNING id, recorded_at
    ), queued AS (
        INSERT INTO activity_outbox (
            event_id, topic, message_key, event_type, tenant_id, subject, occurred_at, payload
        )
        SELECT id, :topic, :message_key, :action, :tenant_id, :subject, :occurred_at,
               jsonb_set(
                   CAST(:document AS jsonb), '{recorded_at}',
                   to_jsonb(to_char(
                       recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\:MI\:SS.US"Z"'
                   ))
               )
        FROM inserted
    )
    SELECT id, recorded_at FROM inserted
    """
)
"""Insert the activity and, only if it is new, its outbox row, in one statement.

The database clock stamps `recorded_at` in both the row and the event document,
so services with skewed clocks still agree on when activities were written.
"""

_SELECT_EXISTING = text(
    """
    SELECT id, recorded_at FROM activities
    WHERE tenant_id = :tenant_id AND correlation_id = :correlation_id
      AND action = :action AND resource_id = :resource_id
    """
)


class UnknownActions(StrEnum):
    """Mode for an action missing from the recorder's catalogue: record it, or raise."""

    ACCEPT = "accept"
    REJECT = "reject"


@dataclass(frozen=True)
class RecordedActivity:
    """The outcome of one recording: the activity's id and whether this call created it.

    When `created` is false, `event_id` and `recorded_at` are those of the
    activity an earlier call recorded with the same idempotency key.
    """

    event_id: UUID
    recorded_at: datetime
    created: bool


def message_key(tenant_id: UUID, resource_id: UUID) -> str:
    """Return the Kafka key that keeps one resource's activities in order on one partition."""
    return f"{tenant_id}:{resource_id}"


class ActivityRecorder:
    """Records envelopes under one payload policy and action catalogue, onto one topic.

    With `unknown_actions="accept"` an action missing from `catalogue` is
    recorded and its name logged once. With `"reject"` it raises
    `UnknownActionError`.
    """

    def __init__(
        self,
        policy: PayloadPolicy | None = None,
        topic: str = EVENTS_TOPIC,
        *,
        catalogue: ActionCatalogue | None = None,
        unknown_actions: UnknownActions | str = UnknownActions.ACCEPT,
    ) -> None:
        self.policy = policy if policy is not None else PayloadPolicy()
        self.topic = topic
        self.catalogue = catalogue if catalogue is not None else default_catalogue()
        self.unknown_actions = _unknown_actions_mode(unknown_actions)
        self._unknown_logged: set[str] = set()

    def prepare(self, envelope: ActivityEnvelope | Mapping[str, Any]) -> dict[str, Any]:
        """Check `envelope` against every rule and return the statement's parameters.

        Raises `EnvelopeError`, `UnknownActionError` or `PayloadPolicyError`
        before anything touches the database.
        """
        checked = _as_envelope(envelope)
        self._check_action(checked.action)
        payload, encoded_payload = self.policy.apply(checked.payload)

        event_id = uuid4()
        event = event_from_envelope(
            checked,
            event_id=event_id,
            # The statement replaces this with the database clock's time of the insert.
            recorded_at=checked.created_at,
            payload=payload,
        )
        return {
            "event_id": event_id,
            "tenant_id": checked.tenant_id,
            "correlation_id": checked.correlation_id,
            "action": checked.action,
            "resource_id": checked.resource_id,
            "resource_type": checked.resource_type,
            "actor_principal_id": checked.actor_principal_id,
            "target_principal_id": checked.target_principal_id,
            "visibility": checked.visibility.value,
            "payload": encoded_payload,
            "occurred_at": checked.created_at,
            "topic": self.topic,
            "message_key": message_key(checked.tenant_id, checked.resource_id),
            "subject": str(checked.resource_id),
            "document": event.model_dump_json(),
        }

    async def record(
        self, session: AsyncExecutor, envelope: ActivityEnvelope | Mapping[str, Any]
    ) -> RecordedActivity:
        """Record `envelope` in the session's transaction; see `record_activity_with_outbox`."""
        return await self._insert(session, self.prepare(envelope))

    def record_sync(
        self, session: SyncExecutor, envelope: ActivityEnvelope | Mapping[str, Any]
    ) -> RecordedActivity:
        """Record `envelope` in the session's transaction; see `record_activity_with_outbox`."""
        return self._insert_sync(session, self.prepare(envelope))

    async def tx(
        self,
        session: AsyncSession,
        envelope: ActivityEnvelope | Mapping[str, Any],
        domain_fn: Callable[[AsyncSession], Awaitable[T]],
    ) -> tuple[T | None, RecordedActivity]:
        """Run `domain_fn` and record its activity in one transaction; see `tx_activity`."""
        parameters = self.prepare(envelope)
        scope = session.begin_nested() if session.in_transaction() else session.begin()

        async with scope:
            recorded = await self._insert(session, parameters)
            if not recorded.created:
                return None, recorded
            return await domain_fn(session), recorded

    def tx_sync(
        self,
        session: Session,
        envelope: ActivityEnvelope | Mapping[str, Any],
        domain_fn: Callable[[Session], T],
    ) -> tuple[T | None, RecordedActivity]:
        """Run `domain_fn` and record its activity in one transaction; see `tx_activity`."""
        parameters = self.prepare(envelope)
        scope = session.begin_nested() if session.in_transaction() else session.begin()

        with scope:
            recorded = self._insert_sync(session, parameters)
            if not recorded.created:
                return None, recorded
            return domain_fn(session), recorded

    @staticmethod
    async def _insert(session: AsyncExecutor, parameters: dict[str, Any]) -> RecordedActivity:
        # NOTE: under REPEATABLE READ or SERIALIZABLE a concurrent duplicate raises a
        # serialization failure here instead of returning the first activity; callers retry.
        try:
            inserted = (await session.execute(_INSERT, parameters)).first()
            if inserted is not None:
                return _outcome(inserted, created=True)
            existing = (await session.execute(_SELECT_EXISTING, parameters)).first()
        except ProgrammingError as exc:
            raise _missing_tables(exc) from exc

        return _outcome(_found(existing, parameters), created=False)

    @staticmethod
    def _insert_sync(session: SyncExecutor, parameters: dict[str, Any]) -> RecordedActivity:
        try:
            inserted = session.execute(_INSERT, parameters).first()
            if inserted is not None:
                return _outcome(inserted, created=True)
            existing = session.execute(_SELECT_EXISTING, parameters).first()
        except ProgrammingError as exc:
            raise _missing_tables(exc) from exc

        return _outcome(_found(existing, parameters), created=False)

    def _check_action(self, action: str) -> None:
        if action in self.catalogue:
            return
        if self.unknown_actions is UnknownActions.REJECT:
            raise UnknownActionError(
                f"action {action!r} is not in the action catalogue and unknown actions are "
                "rejected; add it with catalogue=default_catalogue().with_actions("
                f"{{{action!r}: 'mutation'}}) in configure_recording(...), or pass "
                "unknown_actions='accept'"
            )
        if action not in self._unknown_logged and (
            len(self._unknown_logged) < UNKNOWN_ACTIONS_LOGGED_MAX
        ):
            self._unknown_logged.add(action)
            log.info("unknown_action_accepted", action=action)


def _unknown_actions_mode(value: UnknownActions | str) -> UnknownActions:
    try:
        return UnknownActions(value)
    except ValueError as exc:
        raise ProducerError(
            f"unknown_actions={value!r} is not a setting; use 'accept' or 'reject'"
        ) from exc


def _as_envelope(envelope: ActivityEnvelope | Mapping[str, Any]) -> ActivityEnvelope:
    if isinstance(envelope, ActivityEnvelope):
        return envelope
    try:
        return ActivityEnvelope.model_validate(envelope)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'envelope'}="
            f"{_shown_value(error['loc'], error.get('input'))}: {error['msg']}"
            for error in exc.errors()
        )
        raise EnvelopeError(
            f"activity envelope is invalid: {problems}; fix these fields and record again"
        ) from exc


def _shown_value(location: tuple[int | str, ...], value: Any) -> str:
    # A payload may contain secrets, and it has not been through the policy yet.
    if location and location[0] == "payload":
        return "<payload not shown>"
    shown = repr(value)
    if len(shown) > SHOWN_VALUE_MAX_CHARS:
        return shown[: SHOWN_VALUE_MAX_CHARS - 3] + "..."
    return shown


def _outcome(row: Any, *, created: bool) -> RecordedActivity:
    return RecordedActivity(row.id, row.recorded_at.astimezone(UTC), created)


def _found(existing: Any, parameters: Mapping[str, Any]) -> Any:
    if existing is None:
        # Only a concurrent delete of the conflicting activity between the two statements.
        raise ProducerError(
            f"activity {parameters['action']!r} on resource {parameters['resource_id']} "
            "conflicted with an existing one that is now gone; record it again"
        )
    return existing


def _missing_tables(exc: ProgrammingError) -> ProducerError:
    reason = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
    return ProducerError(
        f"cannot record the activity: {reason}; the activity tables are missing or out of "
        "date in this database, run `activity migrate` (or upgrade_database(url))"
    )


_default_recorder = ActivityRecorder()


def configure_recording(
    policy: PayloadPolicy | None = None,
    topic: str = EVENTS_TOPIC,
    *,
    catalogue: ActionCatalogue | None = None,
    unknown_actions: UnknownActions | str = UnknownActions.ACCEPT,
) -> ActivityRecorder:
    """Set the policy, topic, catalogue and unknown-action mode of the module-level functions.

    Call it once when the service starts; returns the recorder now in use.
    """
    global _default_recorder
    _default_recorder = ActivityRecorder(
        policy, topic, catalogue=catalogue, unknown_actions=unknown_actions
    )
    return _default_recorder


def current_recorder() -> ActivityRecorder:
    """Return the recorder that the module-level functions use."""
    return _default_recorder


async def record_activity_with_outbox(
    session: AsyncExecutor, envelope: ActivityEnvelope | Mapping[str, Any]
) -> RecordedActivity:
    """Record `envelope` and its outbox row in the session's current transaction.

    Calling it again with the same tenant, correlation id, action and resource
    returns the first activity with `created=False` and writes nothing. The
    caller commits; a rollback removes the activity with everything else.
    `envelope` may also be a mapping of its fields. Raises `EnvelopeError`,
    `UnknownActionError` or `PayloadPolicyError` before writing anything when
    the activity breaks a rule.
    """
    return await _default_recorder.record(session, envelope)


def record_activity_with_outbox_sync(
    session: SyncExecutor, envelope: ActivityEnvelope | Mapping[str, Any]
) -> RecordedActivity:
    """Record `envelope` with a synchronous session; same contract as the async form."""
    return _default_recorder.record_sync(session, envelope)


async def tx_activity(
    session: AsyncSession,
    envelope: ActivityEnvelope | Mapping[str, Any],
    domain_fn: Callable[[AsyncSession], Awaitable[T]],
) -> tuple[T | None, RecordedActivity]:
    """Run `domain_fn` and record its activity in one transaction.

    Opens a transaction, or a savepoint when one is already open, and commits
    it (or releases the savepoint) unless `domain_fn` raises. The activity is
    recorded first, so when it already exists `domain_fn` is skipped and the
    result is `None`. The envelope is checked before anything is opened.
    """
    return await _default_recorder.tx(session, envelope, domain_fn)


def tx_activity_sync(
    session: Session,
    envelope: ActivityEnvelope | Mapping[str, Any],
    domain_fn: Callable[[Session], T],
) -> tuple[T | None, RecordedActivity]:
    """Run `domain_fn` and record its activity in one transaction, with a synchronous session."""
    return _default_recorder.tx_sync(session, envelope, domain_fn)
