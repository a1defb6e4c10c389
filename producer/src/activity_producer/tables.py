"""SQLAlchemy models of every table the producer library owns.

The activity and outbox tables are written inside the caller's transaction.
The enrichment agent reads the reference tables (resources, role bindings,
subscriptions, notification preferences) to find an activity's watchers. A
host platform may replace the first three with views of the same columns, and
`check_reference_relations` verifies such views. Triggers keep a per-tenant
version of the reference data in `reference_versions`, which the enrichment
workers compare to decide what cached data to forget.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Connection,
    DateTime,
    Identity,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

__all__ = [
    "REPLACEABLE_TABLES",
    "Activity",
    "Base",
    "InboxNotification",
    "NotificationPreference",
    "OutboxMessage",
    "ReferenceVersion",
    "Resource",
    "RoleBinding",
    "Subscription",
    "TenantNotificationDefault",
    "check_reference_relations",
    "expected_columns",
]

_NAMING = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "pk": "%(table_name)s_pkey",
}


class Base(DeclarativeBase):
    """Declarative base whose metadata holds every table of the pipeline."""

    metadata = MetaData(naming_convention=_NAMING)


class Activity(Base):
    """One recorded activity; the idempotency key makes a second recording a no-op."""

    __tablename__ = "activities"
    __table_args__ = (
        UniqueConstraint("tenant_id", "correlation_id", "action", "resource_id"),
        CheckConstraint(
            "visibility IN ('private', 'resource', 'scope', 'tenant')", name="visibility"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    correlation_id: Mapped[uuid.UUID] = mapped_column(UUID)
    action: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[uuid.UUID] = mapped_column(UUID)
    resource_type: Mapped[str] = mapped_column(String(64))
    actor_principal_id: Mapped[uuid.UUID] = mapped_column(UUID)
    target_principal_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    visibility: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """A Kafka record waiting in the outbox until the relay has it acknowledged.

    `sent_at` is set once Kafka acknowledged the record, on its topic or, for a
    row that cannot be produced, on the dead-letter topic; the relay deletes sent
    rows after a retention period.
    """

    __tablename__ = "activity_outbox"
    __table_args__ = (
        # Keeps the relay's poll an index scan however many sent rows remain.
        Index(
            "activity_outbox_unsent_idx",
            "id",
            postgresql_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID)
    topic: Mapped[str] = mapped_column(Text)
    message_key: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    subject: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    headers: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead_letter_reason: Mapped[str | None] = mapped_column(Text)
    """Reason the relay sent this row to the dead-letter topic instead of its own, or NULL."""


class Resource(Base):
    """A resource of a tenant, with its parent in the resource tree and its owner."""

    __tablename__ = "resources"
    __table_args__ = (Index("resources_parent_idx", "tenant_id", "parent_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    owner_principal_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    name: Mapped[str | None] = mapped_column(Text)


class RoleBinding(Base):
    """A role a principal holds on a resource and, through it, on every descendant."""

    __tablename__ = "role_bindings"
    __table_args__ = (
        Index(
            "role_bindings_active_idx",
            "tenant_id",
            "resource_id",
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    principal_id: Mapped[uuid.UUID] = mapped_column(UUID)
    resource_id: Mapped[uuid.UUID] = mapped_column(UUID)
    role: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Subscription(Base):
    """A principal's explicit request to hear of a resource, alone or with its descendants."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("scope IN ('resource', 'descendants')", name="scope"),
        Index(
            "subscriptions_active_idx",
            "tenant_id",
            "resource_id",
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index(
            "subscriptions_active_key",
            "tenant_id",
            "principal_id",
            "resource_id",
            "scope",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    principal_id: Mapped[uuid.UUID] = mapped_column(UUID)
    resource_id: Mapped[uuid.UUID] = mapped_column(UUID)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotificationPreference(Base):
    """How much a principal wants to hear within one tenant."""

    __tablename__ = "notification_preferences"
    __table_args__ = (
        CheckConstraint(
            "filter_mode IN ('muted', 'all', 'mutations', 'custom')", name="filter_mode"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    principal_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    filter_mode: Mapped[str] = mapped_column(String(16))
    custom_actions: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class InboxNotification(Base):
    """A durable notification that a person sees after reconnecting; one per activity."""

    __tablename__ = "inbox_notifications"

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    principal_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    notification: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TenantNotificationDefault(Base):
    """A tenant's default preference, for its principals that have none of their own."""

    __tablename__ = "tenant_notification_defaults"
    __table_args__ = (
        CheckConstraint(
            "filter_mode IN ('muted', 'all', 'mutations', 'custom')", name="filter_mode"
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    filter_mode: Mapped[str] = mapped_column(String(16))
    custom_actions: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )


class ReferenceVersion(Base):
    """A tenant's reference-data version, bumped by triggers. No row means version 0.

    Migration 0004 bumps it on every insert, update and delete of role bindings,
    subscriptions, preferences and tenant defaults, and on resource moves, owner
    changes and deletes, once per statement and tenant.
    """

    __tablename__ = "reference_versions"

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


REPLACEABLE_TABLES = ("resources", "role_bindings", "subscriptions")
"""Reference tables a host platform may replace with views over its own tables."""

_RELATION_COLUMNS = text(
    """
    SELECT a.attname AS name, format_type(a.atttypid, NULL) AS type
    FROM pg_attribute a
    WHERE a.attrelid = to_regclass(:relation) AND a.attnum > 0 AND NOT a.attisdropped
    """
)


def expected_columns(table_name: str) -> dict[str, frozenset[str]]:
    """Return each column a reference relation must have, with the PostgreSQL types it may use."""
    table = Base.metadata.tables[table_name]
    return {column.name: _type_names(column.type) for column in table.columns}


def check_reference_relations(connection: Connection) -> list[str]:
    """Return the problems of `resources`, `role_bindings` and `subscriptions` ([] if none).

    The relations are looked up on the connection's search path, so they may be
    the product's tables or a host platform's views with the expected columns.
    """
    problems: list[str] = []
    for relation in REPLACEABLE_TABLES:
        found = {
            row.name: row.type
            for row in connection.execute(_RELATION_COLUMNS, {"relation": relation})
        }
        if not found:
            problems.append(
                f"{relation}: no table or view of that name on the search path; create it "
                "or run `activity migrate`"
            )
            continue
        for column, allowed in expected_columns(relation).items():
            actual = found.get(column)
            if actual is None:
                problems.append(
                    f"{relation}.{column}: missing; add it (NULL::{max(allowed)} AS {column} "
                    "when the host has no such data)"
                )
            elif actual not in allowed:
                problems.append(
                    f"{relation}.{column}: has type {actual}; "
                    f"expected {' or '.join(sorted(allowed))}"
                )
    return problems


def _type_names(column_type: TypeEngine[Any]) -> frozenset[str]:
    if isinstance(column_type, UUID):
        return frozenset({"uuid"})
    if isinstance(column_type, DateTime):
        return frozenset({"timestamp with time zone"})
    if isinstance(column_type, String | Text):
        return frozenset({"text", "character varying"})
    return frozenset({column_type.compile().lower()})
