"""The activity event: the versioned document that leaves a service.

The relay produces one `ActivityEvent` per committed activity to the events
topic. Its `event_id` is the id of the activity row and stays the same end to
end: Kafka's `ce_id` header, Centrifugo idempotency keys and audit records all
derive from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from activity_schemas.envelope import (
    ActivityEnvelope,
    ActorKind,
    AuthorizationDecision,
    DeliveryChannel,
    UiHints,
    Visibility,
)

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "ActivityEvent",
    "ActorRef",
    "ResourceRef",
    "event_from_envelope",
]

EVENT_SCHEMA_VERSION: Literal["1"] = "1"


class ActorRef(BaseModel):
    """The principal that performed the action."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID = Field(description="Principal id.")
    kind: ActorKind = Field(description="user or service.")
    display_name: str | None = Field(default=None, description="Name shown for the actor.")


class ResourceRef(BaseModel):
    """The resource the action changed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: UUID = Field(description="Resource id, unique within the tenant.")
    type: str = Field(description="Resource type, e.g. `page`.")
    parent_id: UUID | None = Field(default=None, description="Parent resource, if known.")


class ActivityEvent(BaseModel):
    """One committed activity, as produced to the events topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = Field(
        default=EVENT_SCHEMA_VERSION, description="Version of this document's schema."
    )
    event_id: UUID = Field(description="Id of the activity; the same on every topic and sink.")
    tenant_id: UUID = Field(description="Tenant that owns the resource.")
    time: datetime = Field(description="When the change happened (UTC, from the service).")
    recorded_at: datetime = Field(
        description="When the activity row was written, by the database clock (UTC)."
    )
    correlation_id: UUID = Field(description="Links the activities of one workflow.")
    actor: ActorRef = Field(description="Who performed the action.")
    resource: ResourceRef = Field(description="What the action changed.")
    action: str = Field(description="Action name `<resource>.<verb>`.")
    target_principal_id: UUID | None = Field(
        default=None, description="Principal the action is about, reached through its inbox."
    )
    visibility: Visibility = Field(description="Who may learn of the activity.")
    payload: dict[str, Any] = Field(description="Action-specific data, after the payload policy.")
    authorization: AuthorizationDecision | None = Field(
        default=None, description="The access decision behind the action, if any."
    )
    ui: UiHints | None = Field(default=None, description="Presentation hints for clients.")
    targets: tuple[DeliveryChannel, ...] = Field(
        description="Kinds of channel the activity may be pushed to."
    )


def event_from_envelope(
    envelope: ActivityEnvelope,
    *,
    event_id: UUID,
    recorded_at: datetime,
    payload: dict[str, Any],
) -> ActivityEvent:
    """Return the event document of `envelope`, with `payload` after the payload policy."""
    return ActivityEvent(
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
