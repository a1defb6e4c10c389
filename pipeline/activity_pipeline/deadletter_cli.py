"""The `activity dead-letters` commands: list dead letters and replay them to their source topic.

Every dead letter carries `dead_letter_source` (`<topic>:<partition>`) and
`dead_letter_reason` headers. `replay` reads the dead-letter topic between two
times, up to its end when the command starts, and produces each record again,
with its key and value, to the topic it came from (the events topic for
enrichment, the deliveries topic for the Centrifugo sink). Replaying the same
window twice sends the records twice; the consumers drop the repeats by event
id (Centrifugo idempotency keys, inbox and archive keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import typer
from activity_schemas.topics import DEAD_LETTER_TOPIC, DELIVERIES_TOPIC, EVENTS_TOPIC
from activity_sinks.settings import SinkSettings
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

__all__ = ["DeadLetterRecord", "deadletter_app", "read_dead_letters", "replay_dead_letters"]

deadletter_app = typer.Typer(
    help="List dead letters and replay them to the topic they came from.", no_args_is_help=True
)

METADATA_TIMEOUT_S = 10.0
"""How long a metadata, offset or flush request may take, in seconds."""

POLL_TIMEOUT_S = 1.0
"""How long one poll of the dead-letter topic waits, in seconds."""

REPLAYABLE_TOPICS = (EVENTS_TOPIC, DELIVERIES_TOPIC)
"""Topics (before the prefix) that dead letters may be sent back to."""


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic with its decoded headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def source_topic(self) -> str | None:
        """Return the topic the record came from, if the header names one."""
        source = self.headers.get("dead_letter_source")
        return source.rsplit(":", 1)[0] if source else None

    @property
    def reason(self) -> str:
        """Return the reason the record was dead-lettered."""
        return self.headers.get("dead_letter_reason", "(no reason recorded)")


def _start_offsets(consumer: Consumer, topic: str, since: datetime | None) -> list[TopicPartition]:
    metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise typer.BadParameter(
            f"dead-letter topic {topic!r} does not exist: run `activity migrate` (or start "
            "`activity relay`) to create the pipeline's topics, or check ACTIVITY_TOPIC_PREFIX"
        )
    partitions = sorted(metadata.topics[topic].partitions)
    start_ms = int(since.timestamp() * 1000) if since else 0
    wanted = [TopicPartition(topic, p, start_ms) for p in partitions]
    return list(consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S))


def read_dead_letters(
    settings: SinkSettings, since: datetime | None = None, until: datetime | None = None
) -> Iterator[DeadLetterRecord]:
    """Yield the dead letters written between `since` and `until`, up to today's end offsets."""
    topic = settings.topic(DEAD_LETTER_TOPIC)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}activity-dead-letter-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        starts = _start_offsets(consumer, topic, since)
        ends = {}
        for start in starts:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, start.partition), timeout=METADATA_TIMEOUT_S
            )
            if 0 <= start.offset < high:
                ends[start.partition] = high
        consumer.assign([s for s in starts if s.partition in ends])
        until_ms = int(until.timestamp() * 1000) if until else None
        while ends:
            message: Message | None = consumer.poll(POLL_TIMEOUT_S)
            if message is None:
                continue
            if message.error() is not None:
                raise KafkaException(message.error())
            partition, offset = message.partition(), message.offset()
            if partition not in ends:
                continue
            if offset + 1 >= ends[partition]:
                del ends[partition]
            _, timestamp_ms = message.timestamp()
            if until_ms is not None and timestamp_ms > until_ms:
                continue
            headers = {k: (v or b"").decode() for k, v in (message.headers() or [])}
            yield DeadLetterRecord(
                partition, offset, timestamp_ms, message.key(), message.value() or b"", headers
            )
    finally:
        consumer.close()


def replay_dead_letters(
    settings: SinkSettings,
    since: datetime | None = None,
    until: datetime | None = None,
    source: str | None = None,
    dry_run: bool = False,
) -> tuple[int, int]:
    """Send the selected dead letters back to their source topics; return (replayed, skipped)."""
    # TODO: a dead letter replayed after Centrifugo's 5-minute idempotency window can reach
    # a channel that already has it. Clients then drop the second copy by its event id.
    allowed = {settings.topic(name) for name in REPLAYABLE_TOPICS}
    wanted_source = settings.topic(source) if source else None
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True}
    )
    replayed = skipped = 0
    for record in read_dead_letters(settings, since, until):
        target = record.source_topic
        if target not in allowed or (wanted_source and target != wanted_source):
            skipped += 1
            continue
        if not dry_run:
            producer.produce(
                target,
                key=record.key,
                value=record.value,
                headers={
                    "replayed_from": f"{settings.topic(DEAD_LETTER_TOPIC)}:"
                    f"{record.partition}@{record.offset}".encode()
                },
            )
            producer.poll(0)
        replayed += 1
    if producer.flush(METADATA_TIMEOUT_S) > 0:
        raise KafkaException(
            f"{replayed} dead letters were not all acknowledged by Kafka within "
            f"{METADATA_TIMEOUT_S:.0f} s; run the replay again"
        )
    return replayed, skipped


Since = Annotated[
    datetime | None,
    typer.Option(help="Only dead letters written at or after this time (UTC if no offset)."),
]
Until = Annotated[
    datetime | None, typer.Option(help="Only dead letters written at or before this time.")
]


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@deadletter_app.command("list")
def list_command(since: Since = None, until: Until = None) -> None:
    """Print one line per dead letter: position, source topic and reason."""
    for record in read_dead_letters(SinkSettings(), _utc(since), _utc(until)):
        typer.echo(f"{record.partition}@{record.offset}\t{record.source_topic}\t{record.reason}")


@deadletter_app.command("replay")
def replay_command(
    since: Since = None,
    until: Until = None,
    source: Annotated[
        str | None,
        typer.Option(help="Only dead letters of activity.events or of activity.deliveries."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Count what would be replayed; send nothing.")
    ] = False,
) -> None:
    """Send dead letters back to the topic they came from, to be processed again."""
    if source is not None and source not in REPLAYABLE_TOPICS:
        raise typer.BadParameter(f"--source must be one of {', '.join(REPLAYABLE_TOPICS)}")
    replayed, skipped = replay_dead_letters(
        SinkSettings(), _utc(since), _utc(until), source, dry_run
    )
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {replayed} dead letters; skipped {skipped}")
