"""Default names of the pipeline's Kafka topics, and the model each one carries."""

from __future__ import annotations

from pydantic import BaseModel

from activity_schemas.audit import AuditRecord
from activity_schemas.delivery import Delivery, DeliveryReceipt
from activity_schemas.event import ActivityEvent

__all__ = [
    "AUDIT_TOPIC",
    "DEAD_LETTER_TOPIC",
    "DELIVERIES_TOPIC",
    "EVENTS_TOPIC",
    "RECEIPTS_TOPIC",
    "TOPIC_MODELS",
]

EVENTS_TOPIC = "activity.events"
DELIVERIES_TOPIC = "activity.deliveries"
AUDIT_TOPIC = "activity.audit"
RECEIPTS_TOPIC = "activity.receipts"
DEAD_LETTER_TOPIC = "activity.dead-letter"

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    EVENTS_TOPIC: ActivityEvent,
    DELIVERIES_TOPIC: Delivery,
    AUDIT_TOPIC: AuditRecord,
    RECEIPTS_TOPIC: DeliveryReceipt,
}
