"""SQLAlchemy models of every table the producer library owns.

The activity and outbox tables are written inside the caller's transaction.
The reference tables (resources, role bindings, subscriptions, notification
preferences) are what the enrichment agent reads to find an activity's
watchers; a host platform may replace them with views of the same columns.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
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

__all__ = [
    "Activity",
    "Base",
    "InboxNotification",
    "NotificationPreference",
    "OutboxMessage",
    "Resource",
    "RoleBinding",
    "Subscription",
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
    """A Kafka record waiting in the outbox until the relay has it acknowledged."""

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
