"""Request and response bodies of the HTTP API, shared by the router and the Python client.

This module needs pydantic only, so the client imports it without FastAPI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from activity_producer.preferences import FilterMode, PreferenceUpdate, StoredPreference
from activity_producer.subscriptions import StoredSubscription, SubscriptionScope

__all__ = [
    "INBOX_PAGE_DEFAULT",
    "INBOX_PAGE_MAX",
    "FieldProblem",
    "Notification",
    "NotificationPage",
    "Preference",
    "PreferenceUpdate",
    "Problem",
    "ReadAllResult",
    "RealtimeToken",
    "Subscription",
    "SubscriptionCreate",
    "SubscriptionList",
]

INBOX_PAGE_DEFAULT = 50
"""Inbox notifications per page when the caller gives no limit; one screen's worth."""

INBOX_PAGE_MAX = 200
"""Maximum inbox notifications per page; bounds one query and one response body."""


class SubscriptionCreate(BaseModel):
    """A request to hear of a resource."""

    model_config = ConfigDict(extra="forbid")

    resource_id: UUID = Field(description="Resource of the caller's tenant to subscribe to.")
    scope: SubscriptionScope = Field(
        default=SubscriptionScope.RESOURCE,
        description="`resource`: the resource alone; `descendants`: it and everything below it.",
    )


class Subscription(BaseModel):
    """One of the caller's subscriptions."""

    id: UUID = Field(description="Id of the subscription; revoke it with this id.")
    resource_id: UUID = Field(description="Resource the subscription covers.")
    scope: SubscriptionScope = Field(description="What the subscription covers.")
    created_at: datetime = Field(description="When the subscription was made.")
    revoked_at: datetime | None = Field(description="When it was revoked; null while active.")

    @classmethod
    def from_stored(cls, stored: StoredSubscription) -> Subscription:
        """Return the response body of a stored subscription."""
        return cls(
            id=stored.id,
            resource_id=stored.resource_id,
            scope=stored.scope,
            created_at=stored.created_at,
            revoked_at=stored.revoked_at,
        )


class SubscriptionList(BaseModel):
    """The caller's active subscriptions, newest first."""

    items: list[Subscription]


class Preference(BaseModel):
    """The caller's notification preference within its tenant."""

    filter_mode: FilterMode = Field(description="How actions are filtered.")
    custom_actions: list[str] = Field(description="Patterns of the `custom` mode.")
    updated_at: datetime | None = Field(description="When it was last saved; null if never.")
    is_default: bool = Field(
        description=(
            "True when the caller never saved a preference; it then has the tenant's "
            "default preference, or `mutations` when the tenant has none."
        )
    )

    @classmethod
    def from_stored(cls, stored: StoredPreference) -> Preference:
        """Return the response body of a stored preference."""
        return cls(
            filter_mode=stored.filter_mode,
            custom_actions=list(stored.custom_actions),
            updated_at=stored.updated_at,
            is_default=stored.is_default,
        )


class Notification(BaseModel):
    """One durable inbox notification of the caller."""

    event_id: UUID = Field(description="Id of the activity the notification is about.")
    action: str = Field(description="Action of that activity, e.g. `invite.created`.")
    notification: dict[str, Any] = Field(description="What the client renders, as delivered.")
    created_at: datetime = Field(description="When the notification was stored.")
    read_at: datetime | None = Field(description="When the caller read it; null while unread.")


class NotificationPage(BaseModel):
    """One page of the inbox, newest first."""

    items: list[Notification]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class ReadAllResult(BaseModel):
    """The outcome of marking the whole inbox read."""

    marked_read: int = Field(description="Notifications that were unread and now are read.")


class RealtimeToken(BaseModel):
    """A Centrifugo connection token for the caller."""

    token: str = Field(description="HS256 JWT whose `sub` is the caller's principal id.")
    expires_at: datetime = Field(description="When the token expires; fetch a new one before.")
    inbox_channel: str = Field(description="The caller's user-limited inbox channel.")


class FieldProblem(BaseModel):
    """One invalid input field."""

    field: str = Field(description="Dotted path of the field, e.g. `custom_actions.0`.")
    location: str = Field(description="Where the field is: `body`, `query`, `path` or `header`.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """An error response, as RFC 9457 problem details."""

    type: str = Field(default="about:blank", description="URI that identifies the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="HTTP status code.")
    detail: str = Field(description="What went wrong in this request, and what to do next.")
    instance: str | None = Field(default=None, description="Path of the request.")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="The invalid fields, for a 422 response."
    )
