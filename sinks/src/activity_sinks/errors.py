"""Exceptions the sinks raise."""

from __future__ import annotations

from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "InvalidChannelError",
    "NotificationTooLargeError",
    "PublishError",
    "SinkError",
]


class SinkError(ActivityPipelineError):
    """Raised when a sink cannot hand its records on."""


class PublishError(SinkError):
    """Raised when Centrifugo did not accept a publication within the retry budget."""

    retriable = True


class NotificationTooLargeError(SinkError):
    """Raised when a notification exceeds the size cap even after its payload was trimmed."""


class InvalidChannelError(SinkError):
    """Raised when a delivery names a channel that Centrifugo would reject."""
