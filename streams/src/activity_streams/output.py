"""The enrichment worker's Kafka producer: each batch's records, acknowledged as a whole.

The agent hands a batch's records (deliveries, audit records, dead letters) to
`send()`, which returns once Kafka acknowledged all of them and raises
`OutputError` otherwise. A thread of its own polls for acknowledgements, so
the agent resolves the next batch while Kafka acknowledges this one. The
producer is confluent-kafka's (librdkafka batches and compresses in its own
threads), not Faust's pure-Python one, which took roughly a tenth of the
worker's time in a profile on the real input.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from activity_streams.errors import EnrichmentError

__all__ = ["MAX_RECORD_BYTES", "OutputError", "OutputProducer", "OutputRecord", "output_config"]

log = structlog.get_logger(__name__)

SEND_TIMEOUT_S = 60.0
"""How long a batch's records may wait for acknowledgements before the batch is sent again."""

POLL_INTERVAL_S = 0.05
"""Maximum wait of the polling thread for an acknowledgement. It returns as soon as one arrives."""

QUEUE_FULL_WAIT_S = 0.01
"""Pause when librdkafka's local queue is full, for the polling thread to free room."""

CLOSE_TIMEOUT_S = 30.0
"""How long `close()` waits for what is still queued."""

MAX_RECORD_BYTES = 1_000_000 - 16_384
"""Largest record (key, value and headers) to produce: librdkafka's and the broker's default
`message.max.bytes`, less room for the record's framing."""

MAX_REPORTED_FAILURES = 3
"""Delivery failures quoted in an `OutputError`; the rest are counted."""


class OutputError(EnrichmentError):
    """Raised when Kafka did not acknowledge every record of a batch; sending it again is safe."""

    retriable = True


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]

    @property
    def size(self) -> int:
        """Bytes of key, value and headers."""
        headers = sum(len(name) + len(value or b"") for name, value in self.headers)
        return len(self.key or b"") + len(self.value) + headers


def output_config(bootstrap_servers: str) -> dict[str, Any]:
    """Return the confluent-kafka configuration of the enrichment worker's producer."""
    return {
        "bootstrap.servers": bootstrap_servers,
        # Idempotence with acks=all keeps one partition's records in order across retries.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.size": 1_000_000,
        # Topics are created with their partitions by `activity migrate`, never by accident.
        "allow.auto.create.topics": False,
    }


class _Acknowledgements:
    """Counts one batch's acknowledgements on the polling thread; resolves `done` at the last."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self._loop = loop
        self._remaining = expected
        self.failures: list[str] = []
        self.done: asyncio.Future[None] = loop.create_future()

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")
        self._remaining -= 1
        if self._remaining == 0:
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class OutputProducer:
    """Sends batches of records; one batch at a time, so records keep their order."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._polling = threading.Event()
        self._poller = threading.Thread(
            target=self._poll, name="enrichment-output-poller", daemon=True
        )

    def start(self) -> None:
        """Start the thread that polls for acknowledgements."""
        self._polling.set()
        self._poller.start()

    def _poll(self) -> None:
        while self._polling.is_set():
            self._producer.poll(POLL_INTERVAL_S)

    async def send(
        self, records: Sequence[OutputRecord], timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        """Produce `records` and return once Kafka acknowledged every one.

        Raises `OutputError` when one failed or the wait timed out. Records not
        sent yet are dropped then, so that sending the batch again does not
        send them twice.
        """
        if not records:
            return
        acknowledgements = _Acknowledgements(asyncio.get_running_loop(), len(records))

        try:
            for record in records:
                self._produce(record, acknowledgements)
            await asyncio.wait_for(asyncio.shield(acknowledgements.done), timeout_s)
        except (KafkaException, TimeoutError) as exc:
            self._producer.purge(in_queue=True, in_flight=False)
            raise OutputError(
                f"{len(records)} output records were not all acknowledged within "
                f"{timeout_s:.0f} s ({type(exc).__name__}: {exc}); check that Kafka at "
                "ACTIVITY_KAFKA_BOOTSTRAP_SERVERS is up and the topics exist (`activity migrate`)"
            ) from exc

        failures = acknowledgements.failures
        if failures:
            quoted = "; ".join(failures[:MAX_REPORTED_FAILURES])
            if len(failures) > MAX_REPORTED_FAILURES:
                quoted += f"; and {len(failures) - MAX_REPORTED_FAILURES} more"
            raise OutputError(
                f"{len(failures)} of {len(records)} output records failed ({quoted}); check that "
                "Kafka at ACTIVITY_KAFKA_BOOTSTRAP_SERVERS is up and the topics exist"
            )

    def _produce(self, record: OutputRecord, acknowledgements: _Acknowledgements) -> None:
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=record.headers,
                    on_delivery=acknowledgements.on_delivery,
                )
                return
            except BufferError:
                # Acknowledgements are counted on the polling thread only, so wait for it.
                time.sleep(QUEUE_FULL_WAIT_S)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop polling, then send what is still queued, waiting at most `timeout_s`."""
        if self._polling.is_set():
            self._polling.clear()
            self._poller.join()
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log.warning("output_records_unsent_at_close", records=remaining)
