"""The archiving agent: appends each batch of audit records to the audit archive.

A batch is written, and durable, before the agent requests the next one, and
Faust acknowledges (then commits) a batch's offsets only at that point. The
writer skips every record its chain already holds, so the offsets Kafka
remembers never decide what is archived: the archive does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Set
from typing import Any

import faust
import structlog
from activity_schemas import AuditRecord
from activity_schemas.topics import DEAD_LETTER_TOPIC
from faust.types import TP, EventT
from pydantic import ValidationError

from activity_sinks.app import app, audit_topic, settings
from activity_sinks.archive import ArchivedRecord, ArchiveStore, ArchiveWriter
from activity_sinks.signing import load_signing_key

__all__ = ["archive_audit_records"]

log = structlog.get_logger(__name__)

dead_letter_topic = app.topic(
    settings.topic(DEAD_LETTER_TOPIC), partitions=settings.topic_partitions
)

_writers: list[ArchiveWriter] = []


@app.on_partitions_assigned.connect
async def _forget_reassigned_chains(app: Any, assigned: Set[TP], **_: Any) -> None:
    """Read chain ends from the archive again for partitions another worker may have written."""
    for writer in _writers:
        writer.forget((tp.topic, tp.partition) for tp in assigned)


async def _dead_letter(event: EventT, reason: str) -> None:
    await dead_letter_topic.send(
        key=event.key,
        value=event.value,
        headers={
            "dead_letter_reason": reason.encode(),
            "dead_letter_source": f"{event.message.topic}:{event.message.partition}".encode(),
            "dead_letter_offset": str(event.message.offset).encode(),
        },
    )
    log.error(
        "audit_record_dead_lettered",
        topic=event.message.topic,
        partition=event.message.partition,
        offset=event.message.offset,
        reason=reason,
    )


@app.agent(audit_topic)
async def archive_audit_records(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Append each batch of audit records to the archive as signed segment files."""
    signing_key = load_signing_key(
        settings.archive_signing_key.get_secret_value() if settings.archive_signing_key else None
    )
    writer = ArchiveWriter(ArchiveStore(settings.archive_dir), signing_key)
    _writers.append(writer)
    log.info("audit_archive_opened", archive=settings.archive_dir)
    try:
        async for batch in stream.take_events(
            settings.sink_batch_size, within=settings.archive_batch_window_s
        ):
            records = []
            for event in batch:
                try:
                    record = AuditRecord.model_validate_json(event.value)
                except ValidationError:
                    await _dead_letter(event, "value is not a valid AuditRecord document")
                    continue
                records.append(
                    ArchivedRecord(
                        topic=event.message.topic,
                        partition=event.message.partition,
                        offset=event.message.offset,
                        record=record,
                    )
                )
            result = await asyncio.to_thread(writer.write, records)
            log.debug(
                "audit_records_archived",
                records=result.records,
                skipped=result.skipped,
                segments=len(result.segments),
            )
            yield result.records
    finally:
        _writers.remove(writer)
        writer.close()
