"""Centrifugo connection tokens for the callers of the HTTP API.

The token is an HS256 JWT whose `sub` is the caller's principal id. With it,
Centrifugo lets the client subscribe to its own user-limited inbox channel.
The HMAC secret comes from `ACTIVITY_CENTRIFUGO_TOKEN_SECRET`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import jwt
import structlog

__all__ = [
    "DEV_TOKEN_SECRET",
    "REALTIME_TOKEN_TTL_S",
    "TOKEN_SECRET_VARIABLE",
    "IssuedToken",
    "RealtimeTokenIssuer",
    "inbox_channel",
]

log = structlog.get_logger(__name__)

TOKEN_SECRET_VARIABLE = "ACTIVITY_CENTRIFUGO_TOKEN_SECRET"
"""Environment variable that contains Centrifugo's HMAC secret."""

DEV_TOKEN_SECRET = "dev-hmac-secret-change-me-0123456789"
"""Secret of the local development stack; never use it in production."""

REALTIME_TOKEN_TTL_S = 3600
"""Lifetime of an issued token, in seconds; long enough that clients refresh rarely."""


def inbox_channel(tenant_id: UUID, principal_id: UUID) -> str:
    """Return the user-limited inbox channel of a principal; the sink publishes to the same name."""
    return f"inbox:{tenant_id}#{principal_id}"


@dataclass(frozen=True)
class IssuedToken:
    """A connection token and when it expires."""

    token: str
    expires_at: datetime


class RealtimeTokenIssuer:
    """Issues connection tokens signed with one HMAC secret."""

    def __init__(self, secret: str | None = None, ttl_s: int = REALTIME_TOKEN_TTL_S) -> None:
        if secret is None:
            secret = os.environ.get(TOKEN_SECRET_VARIABLE, DEV_TOKEN_SECRET)
        if secret == DEV_TOKEN_SECRET:
            log.warning("realtime_token_secret_is_local_default", variable=TOKEN_SECRET_VARIABLE)
        self._secret = secret
        self._ttl_s = ttl_s

    def issue(self, principal_id: UUID) -> IssuedToken:
        """Return a connection token for `principal_id`."""
        now = int(time.time())
        expires = now + self._ttl_s
        token = jwt.encode(
            {"sub": str(principal_id), "iat": now, "exp": expires}, self._secret, "HS256"
        )
        return IssuedToken(token, datetime.fromtimestamp(expires, UTC))
