"""The enrichment worker's producer against the real Kafka broker: batches acknowledged whole."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from activity_pipeline.workers import create_pipeline_topics
from activity_producer.relay import RelaySettings
from activity_schemas.topics import AUDIT_TOPIC
from activity_streams.output import OutputError, OutputProducer, OutputRecord, output_config

from tests.conftest import wait_until
from tests.enrichment.conftest import TopicRecords

READ_TIMEOUT_S = 60.0


@pytest.fixture
def output(relay_settings: RelaySettings) -> Iterator[OutputProducer]:
    create_pipeline_topics(relay_settings)
    producer = OutputProducer(output_config(relay_settings.kafka_bootstrap_servers))
    producer.start()
    yield producer
    producer.close()


async def test_send_waits_for_every_record(
    output: OutputProducer, relay_settings: RelaySettings
) -> None:
    topic = relay_settings.topic_prefix + AUDIT_TOPIC
    marker = uuid4().hex.encode()
    records = [
        OutputRecord(topic, f"key-{n % 7}".encode(), marker + b":%d" % n, [("ce_id", b"%d" % n)])
        for n in range(1_000)
    ]
    reader = TopicRecords(relay_settings.kafka_bootstrap_servers, topic)

    await output.send(records)

    def arrived() -> int:
        return sum(1 for r in reader.snapshot() if r.value.startswith(marker))

    try:
        assert wait_until(lambda: arrived() == 1_000, READ_TIMEOUT_S)
        mine = [r for r in reader.snapshot() if r.value.startswith(marker)]
        assert {r.headers["ce_id"] for r in mine} == {b"%d" % n for n in range(1_000)}
    finally:
        reader.stop()


async def test_send_to_missing_topic_fails(
    output: OutputProducer,
) -> None:
    records = [OutputRecord(f"missing-{uuid4().hex}", None, b"{}", [])]

    with pytest.raises(OutputError, match=r"not all acknowledged within 2 s.*activity migrate"):
        await output.send(records, timeout_s=2)


def test_record_size_counts_key_value_and_headers() -> None:
    record = OutputRecord("topic", b"key", b"value", [("ce_id", b"1234"), ("absent", None)])

    assert record.size == len(b"key") + len(b"value") + len("ce_id") + 4 + len("absent")
