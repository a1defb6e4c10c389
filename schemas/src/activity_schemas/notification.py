"""The notification: the versioned document a Centrifugo client receives for one activity.

It is the activity event minus what no recipient may see (the authorization
decision and the delivery targets), capped in size: an oversize payload is
replaced by a summary and a link where the client loads the whole activity.
The same document is stored in the durable inbox.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from activity_schemas.envelope import UiHints, Visibility
from activity_schemas.event import ActorRef, ResourceRef

__all__ = ["NOTIFICATION_SCHEMA_VERSION", "Notification", "NotificationEvent"]

NOTIFICATION_SCHEMA_VERSION: Literal["1"] = "1"


class NotificationEvent(BaseModel):
    """The part of an activity event that its recipients may see."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(description="Id of the activity; clients drop a second copy by it.")
    tenant_id: UUID = Field(description="Tenant that owns the resource.")
    time: datetime = Field(description="When the change happened (UTC).")
    correlation_id: UUID = Field(description="Links the activities of one workflow.")
    actor: ActorRef = Field(description="Who performed the action.")
    resource: ResourceRef = Field(description="What the action changed.")
    action: str = Field(description="Action name `<resource>.<verb>`.")
    target_principal_id: UUID | None = Field(
        default=None, description="Principal the action is about."
    )
    visibility: Visibility = Field(description="Who may learn of the activity.")
    payload: dict[str, Any] = Field(
        description="Action-specific data; empty when `truncated` is true."
    )
    ui: UiHints | None = Field(default=None, description="Presentation hints for clients.")


class Notification(BaseModel):
    """The document a client receives on an inbox, resource or chat channel; the inbox stores it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = Field(
        default=NOTIFICATION_SCHEMA_VERSION, description="Version of this document's schema."
    )
    type: Literal["activity"] = Field(default="activity", description="Kind of document.")
    event: NotificationEvent = Field(description="The activity, as its recipients may see it.")
    truncated: bool = Field(
        default=False, description="Whether the payload was left out because it was too large."
    )
    summary: str | None = Field(
        default=None, description="One line describing the activity; set when `truncated`."
    )
    link: str | None = Field(
        default=None, description="Where the client loads the whole activity; set when `truncated`."
    )
