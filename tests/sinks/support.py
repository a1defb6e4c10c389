"""Helpers of the sink tests: deliveries, a WebSocket inbox client, and a private Centrifugo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from activity_schemas import (
    ActivityEvent,
    ActorKind,
    ActorRef,
    Delivery,
    DeliveryChannel,
    Recipient,
    ResourceRef,
    Visibility,
)
from activity_sinks.delivering import SourceRecord
from activity_sinks.tokens import connection_token
from activity_streams.channels import inbox_channel
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

HMAC_SECRET = "dev-hmac-secret-change-me-0123456789"
API_KEY = "dev-api-key"
SHARED_API_URL = "http://127.0.0.1:18000/api"
SHARED_WEBSOCKET_URL = "ws://127.0.0.1:18000/connection/websocket"
WAIT_S = 60.0
"""Generous wait for anything asynchronous: the machine is shared and slow."""

CENTRIFUGO_BINARY = Path.home() / ".cache/activity-pipeline/centrifugo-v6.9.1/centrifugo"
CONFIG = Path(__file__).resolve().parents[2] / "deploy/centrifugo/config.json"


def make_delivery(
    tenant_id: UUID,
    recipients: list[UUID],
    shared_channels: tuple[str, ...] = (),
    *,
    resource_id: UUID | None = None,
    visibility: Visibility = Visibility.TENANT,
    payload: dict[str, Any] | None = None,
    target: UUID | None = None,
) -> Delivery:
    """Return a delivery of a fresh `resource.updated` activity to `recipients`' inboxes."""
    now = datetime.now(UTC)
    reasons = [
        Recipient(principal_id=p, reasons=("target",) if p == target else ("owner",))
        for p in recipients
    ]
    event = ActivityEvent(
        event_id=uuid4(),
        tenant_id=tenant_id,
        time=now,
        recorded_at=now,
        correlation_id=uuid4(),
        actor=ActorRef(id=uuid4(), kind=ActorKind.USER, display_name="Ada"),
        resource=ResourceRef(id=resource_id or uuid4(), type="document"),
        action="resource.updated",
        target_principal_id=target,
        visibility=visibility,
        payload=payload if payload is not None else {"title": "Quarterly plan"},
        targets=(DeliveryChannel.INBOX, DeliveryChannel.RESOURCE),
    )
    return Delivery(event=event, recipients=tuple(reasons), shared_channels=shared_channels)


def records(deliveries: list[Delivery], topic: str = "test.deliveries") -> list[SourceRecord]:
    """Return the deliveries as Kafka records of one partition."""
    return [
        SourceRecord(
            key=f"{d.event.tenant_id}:{d.event.resource.id}".encode(),
            value=d.model_dump_json().encode(),
            topic=topic,
            partition=0,
            offset=offset,
        )
        for offset, d in enumerate(deliveries)
    ]


class _Counting(SubscriptionEventHandler):
    def __init__(self, inbox: InboxClient) -> None:
        self._inbox = inbox

    async def on_publication(self, ctx: PublicationContext) -> None:
        self._inbox.received[ctx.pub.data["event"]["event_id"]] += 1


class InboxClient:
    """A real WebSocket client of one principal, counting publications per event id."""

    def __init__(
        self, tenant_id: UUID, principal_id: UUID, websocket_url: str = SHARED_WEBSOCKET_URL
    ) -> None:
        self.received: Counter[str] = Counter()
        self.client = Client(
            websocket_url, token=connection_token(principal_id, HMAC_SECRET), proxy=None
        )
        self.subscription = self.client.new_subscription(
            inbox_channel(tenant_id, principal_id), events=_Counting(self)
        )

    async def start(self) -> None:
        await self.client.connect()
        await self.subscription.subscribe()
        await self.subscription.ready(timeout=WAIT_S)

    async def stop(self) -> None:
        await self.client.disconnect()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateCentrifugo:
    """A Centrifugo process of this test only, on its own loopback port, with the shipped config."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        config = json.loads(CONFIG.read_text(encoding="utf-8"))
        config["http_server"]["port"] = self.port
        self.config = directory / "config.json"
        self.config.write_text(json.dumps(config), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def start(self) -> None:
        if shutil.which(str(CENTRIFUGO_BINARY)) is None:
            raise RuntimeError(
                f"no Centrifugo binary at {CENTRIFUGO_BINARY}; run `activity stack up` first"
            )
        log = open(self.directory / "centrifugo.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [str(CENTRIFUGO_BINARY), "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CENTRIFUGO_LOG_LEVEL": "warn"},
        )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"private Centrifugo on port {self.port} did not become healthy")

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=WAIT_S)
        self.process = None
