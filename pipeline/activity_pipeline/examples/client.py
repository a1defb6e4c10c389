"""Example: a Python client that receives one principal's notifications, each exactly once.

It connects to Centrifugo with a connection token that the host application
issued (`activity_sinks.tokens.connection_token`), subscribes to the
principal's user-limited inbox channel and hands every notification to a
callback. When it reconnects, Centrifugo replays what it missed from the
channel's history; when that is impossible (history expired, too many
missed, or Centrifugo restarted), the client loads the newest notifications
from the durable inbox instead. Every notification passes a filter on its
event id, so history, inbox and live pushes never show one twice.

A browser client does the same with centrifuge-js, loading the inbox from the
host's HTTP API; this example reads `inbox_notifications` directly.

    uv run python -m activity_pipeline.examples.client TENANT PRINCIPAL
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg
from activity_sinks.tokens import connection_token
from activity_streams.channels import inbox_channel
from centrifuge import Client, PublicationContext, SubscribedContext, SubscriptionEventHandler

__all__ = ["InboxLoader", "NotificationClient", "database_inbox_loader"]

PULL_LIMIT = 300
"""Notifications loaded from the durable inbox after a gap; the inbox channel's history size."""

SEEN_CAPACITY = 10_000
"""Event ids remembered to drop repeats; far more than one gap can hold."""

SUBSCRIBE_TIMEOUT_S = 10.0
"""How long connecting and subscribing may take, in seconds."""

InboxLoader = Callable[[int], Awaitable[list[dict[str, Any]]]]
"""Returns up to N newest notification documents of the principal, newest first."""

_NEWEST = """
SELECT notification FROM inbox_notifications
WHERE tenant_id = $1 AND principal_id = $2
ORDER BY created_at DESC, event_id
LIMIT $3
"""


def database_inbox_loader(pool: asyncpg.Pool, tenant_id: UUID, principal_id: UUID) -> InboxLoader:
    """Return a loader that reads a principal's newest durable notifications from PostgreSQL."""

    async def load(limit: int) -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(_NEWEST, tenant_id, principal_id, limit)
        return [json.loads(row["notification"]) for row in rows]

    return load


class _Handler(SubscriptionEventHandler):
    def __init__(self, client: NotificationClient) -> None:
        self._client = client

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        if ctx.was_recovering and not ctx.recovered:
            await self._client.load_gap()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self._client.pushed += 1
        self._client.accept(ctx.pub.data)


class NotificationClient:
    """Receives one principal's inbox notifications once each, pushing them to `on_notification`."""

    def __init__(
        self,
        websocket_url: str,
        token: str,
        channel: str,
        load_inbox: InboxLoader,
        on_notification: Callable[[dict[str, Any]], None],
    ) -> None:
        self.channel = channel
        self.pushed = 0
        self.gaps_loaded = 0
        self._load_inbox = load_inbox
        self._on_notification = on_notification
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._client = Client(websocket_url, token=token, proxy=None)
        self._subscription = self._client.new_subscription(channel, events=_Handler(self))

    def accept(self, notification: dict[str, Any]) -> bool:
        """Pass a notification on unless its event was seen; return whether it was new."""
        event_id = notification["event"]["event_id"]
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        if len(self._seen) > SEEN_CAPACITY:
            self._seen.popitem(last=False)
        self._on_notification(notification)
        return True

    async def load_gap(self) -> None:
        """Load what history could not recover from the durable inbox, oldest first."""
        self.gaps_loaded += 1
        for notification in reversed(await self._load_inbox(PULL_LIMIT)):
            self.accept(notification)

    async def start(self) -> None:
        """Connect and subscribe; raise when either fails within `SUBSCRIBE_TIMEOUT_S`."""
        await self._client.connect()
        await self._subscription.subscribe()
        await asyncio.wait_for(self._subscription.ready(), SUBSCRIBE_TIMEOUT_S)

    async def stop(self) -> None:
        """Disconnect; a later `start()` reconnects and recovers what was missed."""
        await self._client.disconnect()


async def _main(arguments: argparse.Namespace) -> None:
    tenant_id, principal_id = UUID(arguments.tenant), UUID(arguments.principal)
    pool = await asyncpg.create_pool(arguments.database_url, min_size=1, max_size=1)
    client = NotificationClient(
        arguments.websocket_url,
        connection_token(principal_id, arguments.hmac_secret),
        inbox_channel(tenant_id, principal_id),
        database_inbox_loader(pool, tenant_id, principal_id),
        lambda notification: print(json.dumps(notification), flush=True),
    )
    await client.start()
    try:
        await asyncio.Event().wait()
    finally:
        await client.stop()
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print one principal's notifications.")
    parser.add_argument("tenant")
    parser.add_argument("principal")
    parser.add_argument("--websocket-url", default="ws://127.0.0.1:18000/connection/websocket")
    parser.add_argument(
        "--database-url", default="postgresql://activity:activity@127.0.0.1:55432/activity"
    )
    parser.add_argument("--hmac-secret", default="dev-hmac-secret-change-me-0123456789")
    asyncio.run(_main(parser.parse_args()))
