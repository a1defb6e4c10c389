"""The audit record: one per activity, the input of the audit archive."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from activity_schemas.event import ActivityEvent

__all__ = ["AUDIT_SCHEMA_VERSION", "AuditRecord"]

AUDIT_SCHEMA_VERSION: Literal["1"] = "1"


class AuditRecord(BaseModel):
    """An activity with the recipients the pipeline resolved for it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal["1"] = Field(
        default=AUDIT_SCHEMA_VERSION, description="Version of this document's schema."
    )
    event: ActivityEvent = Field(description="The activity as it left the service.")
    recipients: tuple[UUID, ...] = Field(
        description="Principals notified through their inbox, after every filter."
    )
    processed_at: datetime = Field(description="When the enrichment agent resolved it (UTC).")
