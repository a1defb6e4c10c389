"""The publishing agent: delivers each batch of deliveries to Centrifugo, then records receipts.

The agent reads the deliveries topic without automatic acknowledgements and
hands each delivery to the lane of its partition (`activity_sinks.lanes`).
Each lane processes its partition's batches in offset order. The idle lanes
share a batch, so one `DeliveryProcessor.process` call serves several
partitions. A shared batch that is slow (Centrifugo retries, a database
stall) is split into one batch per lane, so a slow partition holds back the
others for at most `SPLIT_AFTER_S`. The lanes use one `cent` client, one
asyncpg pool and the dead-letter topic through `SinkResources`. Faust's
`isolated_partitions=True` would give each partition its own actor, but
faust-streaming 0.15.3 crashes with it when a second worker joins the group
(`MaxRestartsExceeded` after the rebalance cancels the actors).

A delivery is acknowledged only after two steps. First
`DeliveryProcessor.process` returned: Centrifugo accepted its publishes, or
its rejected channels went to the dead-letter topic. Then its receipt or dead
letter went to the producer, which Faust flushes before it commits an offset.
A restart or rebalance re-sends at most the unacknowledged deliveries, and
the idempotency keys absorb the repeats.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import asyncpg
import faust
import structlog
from activity_schemas.topics import DEAD_LETTER_TOPIC
from activity_streams.acks import ack_if_current
from faust.types import EventT

from activity_sinks.access import AccessChecker
from activity_sinks.app import app, deliveries_topic, receipts_topic, settings
from activity_sinks.centrifugo import CentrifugoPublisher
from activity_sinks.delivering import BatchOutcome, DeliveryProcessor, SourceRecord
from activity_sinks.inbox import InboxWriter
from activity_sinks.lanes import PartitionLanes, RebalanceSensor

__all__ = ["SinkResources", "dead_letter_topic", "publish_deliveries", "rebalance_sensor"]

log = structlog.get_logger(__name__)

POOL_SIZE = 4
"""Database connections shared by the lanes, because each batch uses one for a few ms."""

BATCH_RETRY_MAX_DELAY_S = 5.0
"""Maximum wait before a batch whose processing failed (database down) is processed again."""

_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

dead_letter_topic = app.topic(
    settings.topic(DEAD_LETTER_TOPIC), partitions=settings.topic_partitions
)

rebalance_sensor = RebalanceSensor()
"""Stops the lanes as soon as a rebalance starts; added before the worker starts its sensors."""
app.sensors.add(rebalance_sensor)


def _settings_publisher() -> CentrifugoPublisher:
    return CentrifugoPublisher(
        settings.centrifugo_api_url,
        settings.centrifugo_api_key.get_secret_value(),
        settings.centrifugo_timeout_s,
        settings.centrifugo_retry_budget_s,
    )


class SinkResources:
    """The client, pool and processor that every lane of the agent shares; reference-counted."""

    def __init__(
        self, publisher_factory: Callable[[], CentrifugoPublisher] = _settings_publisher
    ) -> None:
        self._publisher_factory = publisher_factory
        self._lock = asyncio.Lock()
        self._leases = 0
        self._pool: asyncpg.Pool | None = None
        self._publisher: CentrifugoPublisher | None = None
        self._processor: DeliveryProcessor | None = None

    async def _open(self) -> DeliveryProcessor:
        self._pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=POOL_SIZE)
        self._publisher = self._publisher_factory()
        await self._publisher.start()
        return DeliveryProcessor(
            self._publisher,
            AccessChecker(self._pool),
            InboxWriter(self._pool),
            settings.notification_max_bytes,
            settings.notification_link_template,
        )

    async def _close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
        if self._pool is not None:
            await self._pool.close()
        self._publisher, self._pool, self._processor = None, None, None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[DeliveryProcessor]:
        """Yield the shared processor; the first lease opens it and the last one closes it."""
        async with self._lock:
            if self._processor is None:
                self._processor = await self._open()
            self._leases += 1
            processor = self._processor
        try:
            yield processor
        finally:
            async with self._lock:
                self._leases -= 1
                if self._leases == 0:
                    await self._close()


resources = SinkResources()


async def _process_until_done(
    processor: DeliveryProcessor, records: list[SourceRecord]
) -> BatchOutcome:
    """Process a batch, waiting out database failures, so its offsets are never acknowledged early.

    The lanes split a shared batch that waits here for long (`SPLIT_AFTER_S`), so that in
    the end only the partitions whose batches keep failing wait.
    """
    attempt = 0
    while True:
        try:
            return await processor.process(records)
        except _DATABASE_ERRORS as exc:
            attempt += 1
            delay = min(BATCH_RETRY_MAX_DELAY_S, 0.2 * 2 ** (attempt - 1))
            log.error(
                "delivery_batch_failed",
                topic=records[0].topic,
                partition=records[0].partition,
                first_offset=records[0].offset,
                attempt=attempt,
                delay_s=delay,
                error=f"{type(exc).__name__}: {exc}",
                consequence="the batch is processed again; check PostgreSQL at "
                "ACTIVITY_DATABASE_URL",
            )
            await asyncio.sleep(delay)


@dataclass(frozen=True)
class _ProcessedBatch:
    """A processed batch on its way to the producer: its records, outcome and start time."""

    records: list[SourceRecord]
    outcome: BatchOutcome
    started: float


async def _process_batch(
    processor: DeliveryProcessor, events: Sequence[EventT[bytes]]
) -> _ProcessedBatch:
    """Deliver a batch of one or more partitions' deliveries to Centrifugo."""
    records = [
        SourceRecord(
            key=event.key,
            value=event.value,
            topic=event.message.topic,
            partition=event.message.partition,
            offset=event.message.offset,
        )
        for event in events
    ]
    started = time.perf_counter()

    outcome = await _process_until_done(processor, records)
    return _ProcessedBatch(records, outcome, started)


_OutgoingRecord = tuple[faust.TopicT, bytes, dict[str, bytes] | None]
"""A record for the producer: its topic, value and headers."""

_DEAD_LETTERS = "dead_letters"
_RECEIPTS = "receipts"


async def _send_in_order(key: bytes | None, in_order: list[_OutgoingRecord]) -> None:
    """Hand the records of one key to the producer one after the other, so their order holds."""
    for topic, value, headers in in_order:
        await topic.send(key=key, value=value, headers=headers)


async def _produce_outcome(batch: _ProcessedBatch) -> None:
    """Hand a processed batch's dead letters and receipts to the producer."""
    outcome = batch.outcome
    records: dict[tuple[str, bytes | None], list[_OutgoingRecord]] = defaultdict(list)
    for letter in outcome.dead_letters:
        records[(_DEAD_LETTERS, letter.source.key)].append(
            (dead_letter_topic, letter.value, letter.headers())
        )
    for key, receipt in outcome.receipts:
        records[(_RECEIPTS, key)].append((receipts_topic, receipt.model_dump_json().encode(), None))

    # One task per key hands its records over in order, and the tasks run side by side, so
    # the producer finds most of the batch queued at once and sends it in a few requests.
    await asyncio.gather(*(_send_in_order(key, in_order) for (_, key), in_order in records.items()))

    log.debug(
        "deliveries_published",
        topic=batch.records[0].topic,
        partitions=len({record.partition for record in batch.records}),
        deliveries=len(batch.records),
        receipts=len(outcome.receipts),
        dead_letters=len(outcome.dead_letters),
        recipients_dropped=outcome.recipients_dropped,
        elapsed_ms=round((time.perf_counter() - batch.started) * 1000, 1),
    )


@app.agent(deliveries_topic)
async def publish_deliveries(stream: faust.StreamT[bytes]) -> None:
    """Route each delivery to its partition's lane; the lanes publish and acknowledge it."""
    async with resources.lease() as processor:

        async def process(events: Sequence[EventT[bytes]]) -> _ProcessedBatch:
            return await _process_batch(processor, events)

        async def ack(event: EventT[bytes]) -> bool:
            return await ack_if_current(app, stream, event)

        lanes = PartitionLanes(
            app,
            rebalance_sensor,
            process,
            _produce_outcome,
            ack,
            settings.sink_batch_size,
        )
        await lanes.start()
        try:
            async for events in stream.noack_take(
                settings.sink_batch_size, within=settings.sink_batch_window_s
            ):
                lanes.dispatch(cast(Sequence[EventT[bytes]], events))
                # Hold no event between batches: Faust waits for unacknowledged events
                # to be released when a rebalance starts.
                del events
        finally:
            await lanes.stop()
