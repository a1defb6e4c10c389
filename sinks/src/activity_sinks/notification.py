"""Rendering an activity event into the notification document its recipients receive.

The document leaves out the authorization decision and the delivery targets,
and is capped in size: when it would exceed the cap, the payload is dropped
and a summary and a link take its place. One rendering serves every
recipient of an activity, which is what lets one `broadcast` carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from activity_schemas import ActivityEvent
from activity_schemas.notification import Notification, NotificationEvent

from activity_sinks.errors import NotificationTooLargeError

__all__ = ["RenderedNotification", "render_notification", "summary_of"]

SUMMARY_MAX_CHARS = 200
"""Longest generated summary, in characters; one line in a client's list."""


@dataclass(frozen=True)
class RenderedNotification:
    """A notification as a JSON-ready dict and as JSON text, with its encoded size."""

    data: dict[str, Any]
    json: str
    size_bytes: int
    truncated: bool


def summary_of(event: ActivityEvent) -> str:
    """Return one line that describes the activity: its UI title or summary, else its action."""
    if event.ui is not None and (event.ui.title or event.ui.summary):
        text = event.ui.title or event.ui.summary or ""
    else:
        actor = event.actor.display_name or str(event.actor.id)
        text = f"{actor}: {event.action} on {event.resource.type} {event.resource.id}"
    return text[:SUMMARY_MAX_CHARS]


def render_notification(
    event: ActivityEvent, max_bytes: int, link_template: str
) -> RenderedNotification:
    """Return the notification of `event`, trimmed to a summary and link when over `max_bytes`.

    Raises `NotificationTooLargeError` when even the trimmed document is too large.
    """
    visible = NotificationEvent(
        event_id=event.event_id,
        tenant_id=event.tenant_id,
        time=event.time,
        correlation_id=event.correlation_id,
        actor=event.actor,
        resource=event.resource,
        action=event.action,
        target_principal_id=event.target_principal_id,
        visibility=event.visibility,
        payload=event.payload,
        ui=event.ui,
    )
    full = Notification(event=visible)
    encoded = full.model_dump_json()
    size = len(encoded.encode())
    if size <= max_bytes:
        return RenderedNotification(full.model_dump(mode="json"), encoded, size, False)

    trimmed = Notification(
        event=visible.model_copy(update={"payload": {}}),
        truncated=True,
        summary=summary_of(event),
        link=link_template.format(
            tenant_id=event.tenant_id, event_id=event.event_id, resource_id=event.resource.id
        ),
    )
    encoded = trimmed.model_dump_json()
    size = len(encoded.encode())
    if size > max_bytes:
        raise NotificationTooLargeError(
            f"notification of event {event.event_id} is {size} bytes even without its payload; "
            f"the cap is {max_bytes} bytes: shorten the actor name or UI hints, or raise "
            "ACTIVITY_NOTIFICATION_MAX_BYTES"
        )
    return RenderedNotification(trimmed.model_dump(mode="json"), encoded, size, True)
