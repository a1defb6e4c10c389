"""Helpers of the HTTP API tests: people, reference rows, inbox rows and outbox reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


@dataclass(frozen=True)
class Person:
    """A principal of a tenant, as the tests act for it."""

    tenant_id: UUID
    principal_id: UUID


def new_person(tenant_id: UUID | None = None) -> Person:
    return Person(tenant_id or uuid4(), uuid4())


async def add_resource(
    engine: AsyncEngine,
    tenant_id: UUID,
    *,
    owner: UUID | None = None,
    parent_id: UUID | None = None,
    resource_type: str = "folder",
) -> UUID:
    resource_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id, name) "
                "VALUES (:t, :id, :type, :parent, :owner, 'test')"
            ),
            {
                "t": tenant_id,
                "id": resource_id,
                "type": resource_type,
                "parent": parent_id,
                "owner": owner,
            },
        )
    return resource_id


async def add_role_binding(
    engine: AsyncEngine,
    tenant_id: UUID,
    principal_id: UUID,
    resource_id: UUID,
    *,
    role: str = "viewer",
    revoked: bool = False,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role, "
                "revoked_at) VALUES (:id, :t, :p, :r, :role, CASE WHEN :revoked THEN now() END)"
            ),
            {
                "id": uuid4(),
                "t": tenant_id,
                "p": principal_id,
                "r": resource_id,
                "role": role,
                "revoked": revoked,
            },
        )


async def add_notification(
    engine: AsyncEngine, person: Person, created_at: datetime, action: str = "invite.created"
) -> UUID:
    event_id = uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO inbox_notifications (tenant_id, principal_id, event_id, action, "
                "notification, created_at) VALUES (:t, :p, :e, :a, CAST(:n AS jsonb), :at)"
            ),
            {
                "t": person.tenant_id,
                "p": person.principal_id,
                "e": event_id,
                "a": action,
                "n": '{"title": "You were invited"}',
                "at": created_at,
            },
        )
    return event_id


async def outbox_rows(engine: AsyncEngine, tenant_id: UUID) -> list[dict[str, Any]]:
    """Return the outbox rows of a tenant in the order they were written."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT event_type, message_key, payload FROM activity_outbox "
                "WHERE tenant_id = :t ORDER BY id"
            ),
            {"t": tenant_id},
        )
        return [dict(row._mapping) for row in result]
