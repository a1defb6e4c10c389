"""Pydantic models of every record on the activity pipeline's topics."""

from activity_schemas.audit import AuditRecord
from activity_schemas.delivery import Delivery, DeliveryReceipt, Recipient
from activity_schemas.envelope import (
    ActivityEnvelope,
    ActorKind,
    AuthorizationDecision,
    DeliveryChannel,
    UiHints,
    Visibility,
)
from activity_schemas.errors import ActivityPipelineError
from activity_schemas.event import ActivityEvent, ActorRef, ResourceRef

__all__ = [
    "ActivityEnvelope",
    "ActivityEvent",
    "ActivityPipelineError",
    "ActorKind",
    "ActorRef",
    "AuditRecord",
    "AuthorizationDecision",
    "Delivery",
    "DeliveryChannel",
    "DeliveryReceipt",
    "Recipient",
    "ResourceRef",
    "UiHints",
    "Visibility",
]
