"""A Faust worker whose agent does nothing: the ceiling of Faust's own consumer path.

It reads the events topic in batches exactly as the enrichment agent does
(same app settings, `noack_take`, batch size and window), acknowledges each
event, and produces one record per batch, whose value is the batch's size, on
the deliveries topic. `activity bench enrichment --through-faust` runs it under
a topic prefix of its own to show how fast Faust alone moves records on this
machine.

Run it with `python -m activity_pipeline.bench.idle_agent worker`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import faust
from activity_schemas.topics import DELIVERIES_TOPIC, EVENTS_TOPIC
from activity_streams.app import create_app
from activity_streams.settings import StreamsSettings

__all__ = ["app"]

settings = StreamsSettings()
app = create_app("bench-idle-agent", settings, settings.enrichment_web_port)
events_topic = app.topic(settings.topic(EVENTS_TOPIC), partitions=settings.topic_partitions)
counts_topic = app.topic(settings.topic(DELIVERIES_TOPIC), partitions=settings.topic_partitions)


@app.agent(events_topic)
async def count(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Acknowledge each batch of events and report its size."""
    async for batch in stream.noack_take(
        settings.enrichment_batch_size, within=settings.enrichment_batch_window_s
    ):
        for event in batch:
            await stream.ack(event)
        await counts_topic.send(value=str(len(batch)).encode())
        yield len(batch)


if __name__ == "__main__":
    app.main()
