"""The publishing agent: sends each batch of deliveries to Centrifugo, then records receipts.

A Centrifugo batch that keeps failing raises, which stops the agent rather
than skipping deliveries: its offsets stay uncommitted and the batch is sent
again after a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import faust
import structlog
from activity_schemas import Delivery, DeliveryReceipt

from activity_sinks.app import app, deliveries_topic, receipts_topic, settings
from activity_sinks.centrifugo import CentrifugoPublisher

__all__ = ["publish_deliveries"]

log = structlog.get_logger(__name__)


@app.agent(deliveries_topic)
async def publish_deliveries(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Publish each batch of deliveries and produce one receipt per delivery."""
    publisher = CentrifugoPublisher(
        settings.centrifugo_api_url,
        settings.centrifugo_api_key.get_secret_value(),
        settings.centrifugo_timeout_s,
    )
    await publisher.start()
    try:
        async for batch in stream.take_events(
            settings.sink_batch_size, within=settings.sink_batch_window_s
        ):
            # TODO: drop recipients whose access was revoked after enrichment, and
            # store the durable inbox row of each target principal.
            deliveries = [Delivery.model_validate_json(event.value) for event in batch]
            channels = await publisher.publish(deliveries)
            accepted_at = datetime.now(UTC)
            for event, delivery in zip(batch, deliveries, strict=True):
                receipt = DeliveryReceipt(
                    event_id=delivery.event.event_id,
                    tenant_id=delivery.event.tenant_id,
                    recipients=tuple(r.principal_id for r in delivery.recipients),
                    shared_channels=delivery.shared_channels,
                    recorded_at=delivery.event.recorded_at,
                    accepted_at=accepted_at,
                )
                await receipts_topic.send(key=event.key, value=receipt.model_dump_json().encode())
            log.debug("deliveries_published", deliveries=len(deliveries), channels=channels)
            yield channels
    finally:
        await publisher.stop()
