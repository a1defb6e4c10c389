"""The correlation id shared by every activity that one workflow records.

The context variable lives here, beside the envelope that reads it, so that an
envelope built inside `activity_producer.correlation(...)` picks up the
workflow's id without the caller passing it by hand.
"""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID, uuid4

__all__ = ["CORRELATION_ID", "current_correlation_id"]

CORRELATION_ID: ContextVar[UUID | None] = ContextVar("activity_correlation_id", default=None)


def current_correlation_id() -> UUID:
    """Return the active workflow's correlation id, or a new one outside any workflow."""
    active = CORRELATION_ID.get()
    return active if active is not None else uuid4()
