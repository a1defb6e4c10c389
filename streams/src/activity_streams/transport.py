"""Faust's aiokafka transport, with a short wait for each fetch.

faust-streaming 0.15.3 builds its aiokafka consumer with a fixed
`fetch_max_wait_ms` of 1,500 ms. With it, an agent that did nothing paused for
about a second every 1.5 s while it drained a backlog of the real input, and
moved 2,100 to 5,000 events per second. With 100 ms it moved 8,900 to 9,800
events per second. This transport
builds the same consumer and only shortens that wait. The Faust apps of both
workers use it (`activity_streams.app.create_app`).
"""

from __future__ import annotations

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["FETCH_MAX_WAIT_MS", "Transport"]

FETCH_MAX_WAIT_MS = 100
"""Maximum time, in ms, that the broker keeps a fetch request waiting for data.

The broker replies at once when there is data, so the short wait costs only
empty fetches on an idle topic: about ten per second per worker (an estimate).
"""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(
        self, transport: faust_aiokafka.Transport
    ) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts and builds its fetcher, which comes later.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """The aiokafka transport whose consumer waits at most `FETCH_MAX_WAIT_MS` per fetch."""

    Consumer = _Consumer
