"""The archiving agent: appends each batch of audit records to the audit archive."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import faust
import structlog
from activity_schemas import AuditRecord

from activity_sinks.app import app, audit_topic, settings
from activity_sinks.archive import ArchivedRecord, ArchiveWriter

__all__ = ["archive_audit_records"]

log = structlog.get_logger(__name__)


@app.agent(audit_topic)
async def archive_audit_records(stream: faust.StreamT[bytes]) -> AsyncIterator[int]:
    """Append each batch of audit records to the archive as segment files."""
    writer = ArchiveWriter(Path(settings.archive_dir))
    async for batch in stream.take_events(
        settings.sink_batch_size, within=settings.sink_batch_window_s
    ):
        records = [
            ArchivedRecord(
                topic=event.message.topic,
                partition=event.message.partition,
                offset=event.message.offset,
                record=AuditRecord.model_validate_json(event.value),
                raw=event.value,
            )
            for event in batch
        ]
        segments = writer.write(records)
        log.debug("audit_records_archived", records=len(records), segments=len(segments))
        yield len(records)
