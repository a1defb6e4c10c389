"""Exceptions the sinks raise."""

from __future__ import annotations

from activity_schemas.errors import ActivityPipelineError

__all__ = ["PublishError", "SinkError"]


class SinkError(ActivityPipelineError):
    """Raised when a sink cannot hand its records on."""


class PublishError(SinkError):
    """Raised when Centrifugo did not accept a publication after every retry."""
