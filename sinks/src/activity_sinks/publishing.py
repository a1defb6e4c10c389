"""The publishing agent: delivers each batch of deliveries to Centrifugo, then records receipts.

One actor per worker handles the batches of every partition assigned to it,
through one `cent` client, one asyncpg pool and the dead-letter topic held by
`SinkResources`. Faust's `isolated_partitions=True` would give each partition
its own actor, but faust-streaming 0.15.3 crashes with it when a second
worker joins the group (`MaxRestartsExceeded` after the rebalance cancels the
actors), so scaling out across workers wins here.

A batch's offsets are acknowledged only after `DeliveryProcessor.process`
returned, that is after Centrifugo accepted its publishes or its rejected
channels went to the dead-letter topic: a restart re-sends at most the
uncommitted batches, and the idempotency keys absorb the repeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import faust
import structlog
from activity_schemas.topics import DEAD_LETTER_TOPIC

from activity_sinks.access import AccessChecker
from activity_sinks.app import app, deliveries_topic, receipts_topic, settings
from activity_sinks.centrifugo import CentrifugoPublisher
from activity_sinks.delivering import BatchOutcome, DeliveryProcessor, SourceRecord
from activity_sinks.inbox import InboxWriter

__all__ = ["SinkResources", "dead_letter_topic", "publish_deliveries"]

log = structlog.get_logger(__name__)

POOL_SIZE = 4
"""Database connections shared by the actors, because each batch uses one for a few ms."""

BATCH_RETRY_MAX_DELAY_S = 5.0
"""Maximum wait before a batch whose processing failed (database down) is processed again."""

_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

dead_letter_topic = app.topic(
    settings.topic(DEAD_LETTER_TOPIC), partitions=settings.topic_partitions
)


class SinkResources:
    """The client, pool and processor that every actor of the agent shares; reference-counted."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._leases = 0
        self._pool: asyncpg.Pool | None = None
        self._publisher: CentrifugoPublisher | None = None
        self._processor: DeliveryProcessor | None = None

    async def _open(self) -> DeliveryProcessor:
        self._pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=POOL_SIZE)
        self._publisher = CentrifugoPublisher(
            settings.centrifugo_api_url,
            settings.centrifugo_api_key.get_secret_value(),
            settings.centrifugo_timeout_s,
            settings.centrifugo_retry_budget_s,
        )
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

    TODO: the other partitions of this worker wait too; give each partition its own
    actor once Faust's isolated partitions survive a rebalance with several workers.
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


@app.agent(deliveries_topic)
async def publish_deliveries(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Deliver each batch of deliveries; produce receipts and dead letters."""
    async with resources.lease() as processor:
        async for batch in stream.take_events(
            settings.sink_batch_size, within=settings.sink_batch_window_s
        ):
            records = [
                SourceRecord(
                    key=event.key,
                    value=event.value,
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                )
                for event in batch
            ]
            started = time.perf_counter()
            outcome = await _process_until_done(processor, records)
            for letter in outcome.dead_letters:
                await dead_letter_topic.send(
                    key=letter.source.key, value=letter.value, headers=letter.headers()
                )
            for key, receipt in outcome.receipts:
                await receipts_topic.send(key=key, value=receipt.model_dump_json().encode())
            log.debug(
                "deliveries_published",
                deliveries=len(records),
                receipts=len(outcome.receipts),
                dead_letters=len(outcome.dead_letters),
                recipients_dropped=outcome.recipients_dropped,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            yield len(records)
