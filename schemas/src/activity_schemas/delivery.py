"""Delivery records: who hears of an activity, and through which channels.

The enrichment agent produces one `Delivery` per activity to the deliveries
topic; the Centrifugo sink publishes it and produces a `DeliveryReceipt`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from activity_schemas.event import ActivityEvent

__all__ = ["DELIVERY_SCHEMA_VERSION", "Delivery", "DeliveryReceipt", "Recipient"]

DELIVERY_SCHEMA_VERSION: Literal["1"] = "1"


class Recipient(BaseModel):
    """One principal who hears of an activity, with the rules that chose it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal_id: UUID = Field(description="Principal notified through its inbox channel.")
    reasons: tuple[str, ...] = Field(
        description=(
            "Rules that chose the principal: `owner`; `role:<owner|delegator>:<resource id>` "
            "(a role binding on the resource or the named ancestor); "
            "`subscription:<resource|descendants>:<resource id>`; `chat_member:<channel id>`; "
            "`target`; and `critical` when a critical action overrode the principal's preference."
        )
    )


class Delivery(BaseModel):
    """What the Centrifugo sink publishes for one activity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = Field(
        default=DELIVERY_SCHEMA_VERSION, description="Version of this document's schema."
    )
    event: ActivityEvent = Field(description="The activity, as seen by its recipients.")
    recipients: tuple[Recipient, ...] = Field(
        description="Principals whose inbox channel receives the activity."
    )
    shared_channels: tuple[str, ...] = Field(
        description="Resource and chat channels that receive the activity."
    )


class DeliveryReceipt(BaseModel):
    """The Centrifugo sink's record that Centrifugo accepted an activity's publications."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(description="Id of the delivered activity.")
    tenant_id: UUID = Field(description="Tenant of the activity.")
    recipients: tuple[UUID, ...] = Field(description="Principals whose inbox received it.")
    shared_channels: tuple[str, ...] = Field(description="Resource and chat channels it reached.")
    recorded_at: datetime = Field(description="When the activity row was written (UTC).")
    accepted_at: datetime = Field(description="When Centrifugo accepted the publications (UTC).")
