"""The activity envelope: what a service states about one change to its state.

A service builds an `ActivityEnvelope` and hands it to the producer library,
which validates it, stores it in the outbox and turns it into an
`ActivityEvent` for the pipeline.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from activity_schemas.correlation import current_correlation_id

__all__ = [
    "ACTION_MAX_LENGTH",
    "ActivityEnvelope",
    "ActorKind",
    "AuthorizationDecision",
    "DeliveryChannel",
    "UiHints",
    "Visibility",
    "check_action_name",
]

ACTION_MAX_LENGTH = 64
"""Longest accepted action name, in characters; long enough for every catalogued action."""

_ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def check_action_name(value: str) -> str:
    """Return `value` when it is a well-formed action name; raise `ValueError` naming the rule."""
    if len(value) > ACTION_MAX_LENGTH:
        raise ValueError(
            f"action {value!r} is {len(value)} characters long; the maximum is {ACTION_MAX_LENGTH}"
        )
    if not _ACTION_PATTERN.match(value):
        raise ValueError(
            f"action {value!r} must be `<resource>.<verb>`: lowercase letters, digits "
            "and underscores, separated by dots, e.g. `signal.created`"
        )
    return value


class Visibility(StrEnum):
    """Who may learn of an activity besides the audit trail."""

    PRIVATE = "private"
    RESOURCE = "resource"
    SCOPE = "scope"
    TENANT = "tenant"


class DeliveryChannel(StrEnum):
    """Kinds of Centrifugo channel an activity may be pushed to."""

    INBOX = "inbox"
    RESOURCE = "resource"
    CHAT = "chat"


class ActorKind(StrEnum):
    """Kind of principal that performed an action."""

    USER = "user"
    SERVICE = "service"


class AuthorizationDecision(BaseModel):
    """The access decision that allowed the action, as the service's policy engine made it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed: bool = Field(description="Whether the policy allowed the action.")
    policy: str | None = Field(
        default=None, max_length=200, description="Name or id of the policy that decided."
    )
    reason: str | None = Field(
        default=None, max_length=500, description="Short human-readable reason for the decision."
    )


class UiHints(BaseModel):
    """Presentation hints for clients that render the activity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str | None = Field(default=None, max_length=64, description="Grouping in a feed.")
    severity: str | None = Field(
        default=None, max_length=16, description="One of info, success, warning, error."
    )
    icon: str | None = Field(default=None, max_length=64, description="Icon name for the client.")
    title: str | None = Field(default=None, max_length=200, description="One-line title.")
    summary: str | None = Field(default=None, max_length=1000, description="Short summary text.")


class ActivityEnvelope(BaseModel):
    """One state change, as a service records it inside its own transaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: UUID = Field(description="Tenant that owns the resource; scopes every lookup.")
    actor_principal_id: UUID = Field(description="Principal that performed the action.")
    actor_kind: ActorKind = Field(
        default=ActorKind.USER, description="Kind of the actor: user or service."
    )
    actor_display_name: str | None = Field(
        default=None, max_length=200, description="Name shown for the actor in notifications."
    )
    resource_id: UUID = Field(description="Resource the action changed.")
    resource_type: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Type of the resource, lowercase with underscores, e.g. `signal`.",
    )
    resource_parent_id: UUID | None = Field(
        default=None, description="Parent resource, when the service knows it."
    )
    action: str = Field(
        description="Action name `<resource>.<verb>` in lowercase, e.g. `signal.created`."
    )
    target_principal_id: UUID | None = Field(
        default=None,
        description="Principal the action is about, such as an invitee; reached through its inbox.",
    )
    visibility: Visibility = Field(
        default=Visibility.RESOURCE, description="Who may learn of the activity."
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="Action-specific data: changed fields and related ids."
    )
    delivery_channels: tuple[DeliveryChannel, ...] = Field(
        default=(DeliveryChannel.INBOX, DeliveryChannel.RESOURCE, DeliveryChannel.CHAT),
        description="Kinds of channel the activity may be pushed to.",
    )
    correlation_id: UUID = Field(
        default_factory=current_correlation_id,
        description="Links the activities of one workflow; new when none is given or active.",
    )
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the change happened, timezone-aware UTC.",
    )
    authorization: AuthorizationDecision | None = Field(
        default=None, description="The access decision behind the action, if any."
    )
    ui: UiHints | None = Field(default=None, description="Presentation hints for clients.")

    @field_validator("action")
    @classmethod
    def _check_action(cls, value: str) -> str:
        return check_action_name(value)

    @field_validator("delivery_channels")
    @classmethod
    def _check_delivery_channels(
        cls, value: tuple[DeliveryChannel, ...]
    ) -> tuple[DeliveryChannel, ...]:
        repeated = sorted({channel.value for channel in value if value.count(channel) > 1})
        if repeated:
            raise ValueError(
                f"delivery_channels lists {', '.join(repeated)} more than once; "
                "name each kind of channel once"
            )
        return value

    @field_validator("created_at")
    @classmethod
    def _check_created_at(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"created_at {value.isoformat()} has no time zone; "
                "pass a timezone-aware UTC datetime such as datetime.now(UTC)"
            )
        return value.astimezone(UTC)

    @property
    def is_chat_action(self) -> bool:
        """Whether the action belongs to a chat (`message.*` or `receipt.*`)."""
        return self.action.startswith(("message.", "receipt."))
