"""What the demo watches from outside the pipeline: topics it reads and a WebSocket client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

__all__ = ["InboxListener", "TopicReader", "end_offsets"]

POLL_TIMEOUT_S = 0.2
"""How long one poll of a topic reader waits for records, in seconds."""

METADATA_TIMEOUT_S = 10.0
"""How long a metadata or offset request may take, in seconds."""


def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Return the current end offset of each partition of `topic`.

    Retries while the broker still elects leaders for a topic created moments ago.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "activity-demo"})
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
        offsets = {}
        for partition in metadata.topics[topic].partitions:
            while True:
                try:
                    _, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=METADATA_TIMEOUT_S
                    )
                    break
                except KafkaException:
                    # librdkafka does not mark NOT_LEADER_FOR_PARTITION retriable here,
                    # but a new topic's leaders settle within seconds.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            offsets[partition] = high
        return offsets
    finally:
        consumer.close()


class TopicReader:
    """Reads a topic from given offsets in a thread and passes each JSON value to `handle`."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        start_offsets: dict[int, int],
        handle: Callable[[dict[str, Any]], None],
    ) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "activity-demo",
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign(
            [
                TopicPartition(topic, partition, offset if offset >= 0 else OFFSET_END)
                for partition, offset in start_offsets.items()
            ]
        )
        self._handle = handle
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"reader-{topic}", daemon=True)

    def start(self) -> None:
        """Start reading in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the consumer."""
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for message in self._consumer.consume(500, timeout=POLL_TIMEOUT_S):
                    if message.error() is not None:
                        raise KafkaException(message.error())
                    self._handle(json.loads(message.value()))
        finally:
            self._consumer.close()


class _CountingHandler(SubscriptionEventHandler):
    def __init__(self, listener: InboxListener) -> None:
        self._listener = listener

    async def on_publication(self, ctx: PublicationContext) -> None:
        self._listener.record(ctx.pub.data)


class InboxListener:
    """A real Centrifugo WebSocket client, subscribed to one principal's inbox channel."""

    def __init__(self, websocket_url: str, token: str, channel: str) -> None:
        self.channel = channel
        self.event_ids: set[UUID] = set()
        self.publications = 0
        self._client = Client(websocket_url, token=token, proxy=None)
        self._subscription = self._client.new_subscription(channel, events=_CountingHandler(self))

    def record(self, data: dict[str, Any]) -> None:
        """Count one received publication."""
        self.publications += 1
        self.event_ids.add(UUID(data["event"]["event_id"]))

    async def start(self, timeout_s: float = 10.0) -> None:
        """Connect and subscribe; raise when either does not succeed within `timeout_s`."""
        await self._client.connect()
        await self._subscription.subscribe()
        await asyncio.wait_for(self._subscription.ready(), timeout_s)

    async def stop(self) -> None:
        """Disconnect the client."""
        await self._client.disconnect()
