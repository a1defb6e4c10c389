"""Names of the Centrifugo channels an activity is pushed to.

Every channel is scoped by tenant and lives in a namespace that the shipped
Centrifugo config declares. Inbox channels are user-limited: the principal id
after `#` is the only user Centrifugo lets subscribe.
"""

from __future__ import annotations

import re
from uuid import UUID

from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "CHANNEL_MAX_LENGTH",
    "ChannelNameError",
    "chat_channel",
    "inbox_channel",
    "resource_channel",
]

CHANNEL_MAX_LENGTH = 255
"""Centrifugo's default limit on a channel name, in bytes (`channel.max_length`)."""

_SAFE = re.compile(r"^[A-Za-z0-9_:#.\-]+$")


class ChannelNameError(ActivityPipelineError):
    """Raised when a channel name would be rejected by Centrifugo."""


def _checked(name: str) -> str:
    if len(name.encode()) > CHANNEL_MAX_LENGTH:
        raise ChannelNameError(
            f"channel {name[:60]!r}... is {len(name.encode())} bytes long; "
            f"Centrifugo accepts at most {CHANNEL_MAX_LENGTH}"
        )
    if not _SAFE.match(name):
        raise ChannelNameError(
            f"channel {name!r} contains characters outside A-Z, a-z, 0-9, "
            "'_', ':', '#', '.', '-'; use ids, not free text, in channel names"
        )
    return name


def inbox_channel(tenant_id: UUID, principal_id: UUID) -> str:
    """Return the user-limited inbox channel of a principal within a tenant."""
    return _checked(f"inbox:{tenant_id}#{principal_id}")


def resource_channel(tenant_id: UUID, resource_id: UUID) -> str:
    """Return the channel that screens showing a resource live subscribe to."""
    return _checked(f"resource:{tenant_id}.{resource_id}")


def chat_channel(tenant_id: UUID, channel_id: UUID | str) -> str:
    """Return the channel of a chat conversation."""
    return _checked(f"chat:{tenant_id}.{channel_id}")
