"""Centrifugo JWTs that a host application issues to its users.

A connection token authenticates a principal (`sub`); Centrifugo then lets
it subscribe to its own user-limited inbox channels only. Resource and chat
channels need a subscription token, which the host issues only to principals
that may access the resource or chat.
"""

from __future__ import annotations

import time
from uuid import UUID

import jwt

__all__ = ["DEFAULT_TOKEN_TTL_S", "connection_token", "subscription_token"]

DEFAULT_TOKEN_TTL_S = 3600
"""Lifetime of an issued token, in seconds; clients refresh before it ends."""


def connection_token(principal_id: UUID, hmac_secret: str, ttl_s: int = DEFAULT_TOKEN_TTL_S) -> str:
    """Return an HS256 connection JWT for `principal_id`."""
    now = int(time.time())
    return jwt.encode(
        {"sub": str(principal_id), "iat": now, "exp": now + ttl_s}, hmac_secret, "HS256"
    )


def subscription_token(
    principal_id: UUID, channel: str, hmac_secret: str, ttl_s: int = DEFAULT_TOKEN_TTL_S
) -> str:
    """Return an HS256 subscription JWT that lets `principal_id` subscribe to `channel`."""
    now = int(time.time())
    return jwt.encode(
        {"sub": str(principal_id), "channel": channel, "iat": now, "exp": now + ttl_s},
        hmac_secret,
        "HS256",
    )
