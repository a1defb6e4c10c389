"""Subscriptions as library calls: subscribe to a resource, list, revoke.

A subscription is a principal's explicit request to hear of a resource alone
(scope `resource`) or of it and everything below it (scope `descendants`).
Only a principal that may access the resource can subscribe to it. Each change
records its activity through the outbox in the caller's transaction, so the
pipeline receives every change of the reference data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from activity_schemas import ActivityEnvelope, DeliveryChannel, Visibility
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from activity_producer.errors import ProducerError
from activity_producer.recording import (
    RecordedActivity,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
)

__all__ = [
    "SUBSCRIPTION_CREATED",
    "SUBSCRIPTION_REVOKED",
    "ResourceAccessDeniedError",
    "ResourceNotFoundError",
    "StoredSubscription",
    "SubscriptionChange",
    "SubscriptionError",
    "SubscriptionNotFoundError",
    "SubscriptionScope",
    "list_subscriptions",
    "list_subscriptions_sync",
    "revoke_subscription",
    "revoke_subscription_sync",
    "subscribe",
    "subscribe_sync",
]

SUBSCRIPTION_CREATED = "subscription.created"
"""Action recorded when a principal subscribes to a resource."""

SUBSCRIPTION_REVOKED = "subscription.revoked"
"""Action recorded when a principal revokes one of its subscriptions."""

MAX_TREE_DEPTH = 64
"""Deepest ancestor chain searched for a role binding; the enrichment agent stops at the same."""


class SubscriptionScope(StrEnum):
    """Coverage of a subscription: the resource alone, or the resource and its descendants."""

    RESOURCE = "resource"
    DESCENDANTS = "descendants"


class SubscriptionError(ProducerError):
    """Raised when a subscription cannot be created, found or revoked."""


class ResourceNotFoundError(SubscriptionError):
    """Raised when the resource to subscribe to does not exist in the caller's tenant."""


class ResourceAccessDeniedError(SubscriptionError):
    """Raised when the principal neither owns the resource nor holds a role on it or an ancestor."""


class SubscriptionNotFoundError(SubscriptionError):
    """Raised when no active subscription of the principal in the tenant has the given id."""


@dataclass(frozen=True)
class StoredSubscription:
    """One subscription row."""

    id: UUID
    tenant_id: UUID
    principal_id: UUID
    resource_id: UUID
    scope: SubscriptionScope
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class SubscriptionChange:
    """The outcome of a change: the subscription, whether this call made it, and its activity.

    `activity` is `None` when nothing changed (subscribing again to an active
    subscription).
    """

    subscription: StoredSubscription
    created: bool
    activity: RecordedActivity | None


_COLUMNS = "id, tenant_id, principal_id, resource_id, scope, created_at, revoked_at"

_ACCESS = text(
    f"""
    WITH RECURSIVE chain(id, parent_id, owner_principal_id, type, depth) AS (
        SELECT id, parent_id, owner_principal_id, type, 0
        FROM resources WHERE tenant_id = :tenant_id AND id = :resource_id
        UNION ALL
        SELECT r.id, r.parent_id, r.owner_principal_id, r.type, c.depth + 1
        FROM chain c
        JOIN resources r ON r.tenant_id = :tenant_id AND r.id = c.parent_id
        WHERE c.depth < {MAX_TREE_DEPTH}
    )
    SELECT
        c.type AS resource_type,
        c.parent_id AS parent_id,
        c.owner_principal_id = :principal_id AS owns,
        EXISTS (
            SELECT 1 FROM role_bindings b
            WHERE b.tenant_id = :tenant_id AND b.principal_id = :principal_id
              AND b.revoked_at IS NULL AND b.resource_id IN (SELECT id FROM chain)
        ) AS bound
    FROM chain c WHERE c.depth = 0
    """
)

_INSERT = text(
    f"""
    INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope, created_at)
    VALUES (:id, :tenant_id, :principal_id, :resource_id, :scope, clock_timestamp())
    ON CONFLICT (tenant_id, principal_id, resource_id, scope) WHERE revoked_at IS NULL
    DO NOTHING
    RETURNING {_COLUMNS}
    """
)

_SELECT_ACTIVE = text(
    f"""
    SELECT {_COLUMNS} FROM subscriptions
    WHERE tenant_id = :tenant_id AND principal_id = :principal_id
      AND resource_id = :resource_id AND scope = :scope AND revoked_at IS NULL
    """
)

_REVOKE = text(
    f"""
    UPDATE subscriptions SET revoked_at = clock_timestamp()
    WHERE id = :id AND tenant_id = :tenant_id AND principal_id = :principal_id
      AND revoked_at IS NULL
    RETURNING {_COLUMNS}
    """
)

_LIST = text(
    f"""
    SELECT {_COLUMNS} FROM subscriptions
    WHERE tenant_id = :tenant_id AND principal_id = :principal_id AND revoked_at IS NULL
      AND (CAST(:resource_id AS uuid) IS NULL OR resource_id = :resource_id)
    ORDER BY created_at DESC, id DESC
    """
)


def _subscription(row: Any) -> StoredSubscription:
    return StoredSubscription(
        id=row.id,
        tenant_id=row.tenant_id,
        principal_id=row.principal_id,
        resource_id=row.resource_id,
        scope=SubscriptionScope(row.scope),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _envelope(action: str, subscription: StoredSubscription) -> ActivityEnvelope:
    """Return the activity of a subscription change, keyed by the subscription's own id.

    The subscription id is the resource, so that the creation and revocation of
    one subscription share a partition, and so that two subscriptions made in
    one workflow never share an idempotency key.
    """
    return ActivityEnvelope(
        tenant_id=subscription.tenant_id,
        actor_principal_id=subscription.principal_id,
        resource_id=subscription.id,
        resource_type="subscription",
        resource_parent_id=subscription.resource_id,
        action=action,
        visibility=Visibility.PRIVATE,
        delivery_channels=(DeliveryChannel.INBOX,),
        payload={
            "subscription_id": str(subscription.id),
            "principal_id": str(subscription.principal_id),
            "resource_id": str(subscription.resource_id),
            "scope": subscription.scope.value,
        },
    )


def _check_access(access: Any, keys: dict[str, UUID]) -> None:
    """Raise unless the access query found the resource and the principal may access it."""
    if access is None:
        raise ResourceNotFoundError(
            f"resource {keys['resource_id']} does not exist in tenant {keys['tenant_id']}; "
            "subscribe to a resource of your own tenant"
        )
    if not (access.owns or access.bound):
        raise ResourceAccessDeniedError(
            f"principal {keys['principal_id']} may not subscribe to resource "
            f"{keys['resource_id']}: it neither owns it nor holds an active role binding on it "
            "or an ancestor; ask for access first"
        )


def _not_found(
    tenant_id: UUID, principal_id: UUID, subscription_id: UUID
) -> SubscriptionNotFoundError:
    return SubscriptionNotFoundError(
        f"principal {principal_id} has no active subscription {subscription_id} in tenant "
        f"{tenant_id}; list the active ones with GET /subscriptions or list_subscriptions()"
    )


async def subscribe(
    session: AsyncSession,
    tenant_id: UUID,
    principal_id: UUID,
    resource_id: UUID,
    scope: SubscriptionScope | str = SubscriptionScope.RESOURCE,
) -> SubscriptionChange:
    """Subscribe the principal to a resource of its tenant, and record `subscription.created`.

    Subscribing again with the same scope returns the active subscription with
    `created=False` and records nothing. Raises `ResourceNotFoundError` when the
    tenant has no such resource and `ResourceAccessDeniedError` when the principal
    neither owns it nor holds an active role binding on it or an ancestor. The
    caller commits.
    """
    scope = SubscriptionScope(scope)
    keys = {"tenant_id": tenant_id, "principal_id": principal_id, "resource_id": resource_id}

    _check_access((await session.execute(_ACCESS, keys)).first(), keys)

    parameters = {**keys, "id": uuid4(), "scope": scope.value}
    inserted = (await session.execute(_INSERT, parameters)).first()
    if inserted is None:
        existing = (await session.execute(_SELECT_ACTIVE, parameters)).one()
        return SubscriptionChange(_subscription(existing), False, None)

    subscription = _subscription(inserted)
    activity = await record_activity_with_outbox(
        session, _envelope(SUBSCRIPTION_CREATED, subscription)
    )
    return SubscriptionChange(subscription, True, activity)


async def list_subscriptions(
    session: AsyncSession,
    tenant_id: UUID,
    principal_id: UUID,
    resource_id: UUID | None = None,
) -> list[StoredSubscription]:
    """Return the principal's active subscriptions in the tenant, newest first.

    `resource_id` narrows the list to the subscriptions of one resource.
    """
    rows = await session.execute(
        _LIST, {"tenant_id": tenant_id, "principal_id": principal_id, "resource_id": resource_id}
    )
    return [_subscription(row) for row in rows]


async def revoke_subscription(
    session: AsyncSession, tenant_id: UUID, principal_id: UUID, subscription_id: UUID
) -> SubscriptionChange:
    """Revoke one of the principal's active subscriptions, and record `subscription.revoked`.

    Raises `SubscriptionNotFoundError` when the principal has no active
    subscription with that id in the tenant. The caller commits.
    """
    row = (
        await session.execute(
            _REVOKE,
            {"id": subscription_id, "tenant_id": tenant_id, "principal_id": principal_id},
        )
    ).first()
    if row is None:
        raise _not_found(tenant_id, principal_id, subscription_id)

    subscription = _subscription(row)
    activity = await record_activity_with_outbox(
        session, _envelope(SUBSCRIPTION_REVOKED, subscription)
    )
    return SubscriptionChange(subscription, False, activity)


def subscribe_sync(
    session: Session,
    tenant_id: UUID,
    principal_id: UUID,
    resource_id: UUID,
    scope: SubscriptionScope | str = SubscriptionScope.RESOURCE,
) -> SubscriptionChange:
    """Subscribe with a synchronous session; same contract as `subscribe`."""
    scope = SubscriptionScope(scope)
    keys = {"tenant_id": tenant_id, "principal_id": principal_id, "resource_id": resource_id}

    _check_access(session.execute(_ACCESS, keys).first(), keys)

    parameters = {**keys, "id": uuid4(), "scope": scope.value}
    inserted = session.execute(_INSERT, parameters).first()
    if inserted is None:
        existing = session.execute(_SELECT_ACTIVE, parameters).one()
        return SubscriptionChange(_subscription(existing), False, None)

    subscription = _subscription(inserted)
    activity = record_activity_with_outbox_sync(
        session, _envelope(SUBSCRIPTION_CREATED, subscription)
    )
    return SubscriptionChange(subscription, True, activity)


def list_subscriptions_sync(
    session: Session,
    tenant_id: UUID,
    principal_id: UUID,
    resource_id: UUID | None = None,
) -> list[StoredSubscription]:
    """List active subscriptions with a synchronous session; same as `list_subscriptions`."""
    rows = session.execute(
        _LIST, {"tenant_id": tenant_id, "principal_id": principal_id, "resource_id": resource_id}
    )
    return [_subscription(row) for row in rows]


def revoke_subscription_sync(
    session: Session, tenant_id: UUID, principal_id: UUID, subscription_id: UUID
) -> SubscriptionChange:
    """Revoke with a synchronous session; same contract as `revoke_subscription`."""
    row = session.execute(
        _REVOKE, {"id": subscription_id, "tenant_id": tenant_id, "principal_id": principal_id}
    ).first()
    if row is None:
        raise _not_found(tenant_id, principal_id, subscription_id)

    subscription = _subscription(row)
    activity = record_activity_with_outbox_sync(
        session, _envelope(SUBSCRIPTION_REVOKED, subscription)
    )
    return SubscriptionChange(subscription, False, activity)
