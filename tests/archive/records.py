"""Builders of audit records and archives for the archive tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from activity_schemas import ActivityEvent, ActorRef, AuditRecord, ResourceRef
from activity_sinks.archive import ArchivedRecord, ArchiveStore, ArchiveWriter
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

START = datetime(2026, 12, 3, 23, 50, tzinfo=UTC)
"""Ten minutes before midnight, so a run of records spans two days."""

AUDIT_TOPIC_NAME = "test.activity.audit"


def audit_record(
    tenant_id: UUID,
    index: int,
    *,
    actor_id: UUID | None = None,
    action: str = "page.edited",
    payload: dict[str, Any] | None = None,
    time: datetime | None = None,
) -> AuditRecord:
    """Return one audit record of `tenant_id`; `index` sets its time, a minute apart."""
    moment = time or START + timedelta(minutes=index)
    event = ActivityEvent(
        event_id=uuid4(),
        tenant_id=tenant_id,
        time=moment,
        recorded_at=moment,
        correlation_id=uuid4(),
        actor=ActorRef(id=actor_id or uuid4(), kind="user", display_name=f"Editor {index}"),
        resource=ResourceRef(id=uuid4(), type="page"),
        action=action,
        visibility="resource",
        payload=payload if payload is not None else {"email": f"editor{index}@example.org"},
        targets=("inbox",),
    )
    return AuditRecord(event=event, recipients=(uuid4(),), processed_at=moment)


def positioned(
    records: Sequence[AuditRecord], partition: int = 0, first_offset: int = 0
) -> list[ArchivedRecord]:
    """Place records at consecutive offsets of one partition."""
    return [
        ArchivedRecord(AUDIT_TOPIC_NAME, partition, first_offset + index, record)
        for index, record in enumerate(records)
    ]


def write_in_batches(
    store: ArchiveStore, key: Ed25519PrivateKey, items: Sequence[ArchivedRecord], size: int
) -> ArchiveWriter:
    """Write `items` through one writer in batches of `size`; return the writer."""
    writer = ArchiveWriter(store, key)
    for start in range(0, len(items), size):
        writer.write(items[start : start + size])
    return writer


def raw_key_base64(key: Ed25519PrivateKey) -> str:
    """Return the base64 of the raw private key, as ACTIVITY_ARCHIVE_SIGNING_KEY takes it."""
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw).decode()
