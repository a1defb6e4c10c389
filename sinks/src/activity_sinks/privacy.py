"""The last privacy check before archiving: no credential value, and times in UTC.

The producer's payload policy already redacts credential-like keys. This
check applies the same default rule again, so that a record from a service
with a misconfigured policy does not put a secret's value into the archive.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from activity_schemas import AuditRecord

__all__ = ["REDACTED", "enforce_privacy"]

log = structlog.get_logger(__name__)

REDACTED = "[redacted]"
"""The value a credential-like payload key keeps; the same marker the producer writes."""

_CREDENTIAL_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_ ]?key|authorization|private[-_ ]?key|credential",
    re.IGNORECASE,
)


def _redact(value: Any, path: str, redacted: list[str]) -> Any:
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            item_path = f"{path}.{key}"
            if _CREDENTIAL_KEY.search(str(key)):
                cleaned[key] = REDACTED
                if item != REDACTED:
                    redacted.append(item_path)
            else:
                cleaned[key] = _redact(item, item_path, redacted)
        return cleaned
    if isinstance(value, list):
        return [_redact(item, f"{path}[{index}]", redacted) for index, item in enumerate(value)]
    return value


def _in_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def enforce_privacy(record: AuditRecord) -> dict[str, Any]:
    """Return the record's JSON form with credential-like payload values redacted, times in UTC."""
    event = record.event
    if not all(_in_utc(moment) for moment in (event.time, event.recorded_at, record.processed_at)):
        utc_event = event.model_copy(
            update={"time": _utc(event.time), "recorded_at": _utc(event.recorded_at)}
        )
        record = record.model_copy(
            update={"event": utc_event, "processed_at": _utc(record.processed_at)}
        )
    document = record.model_dump(mode="json")

    redacted: list[str] = []
    payload = document["event"]["payload"]
    document["event"]["payload"] = _redact(payload, "payload", redacted)
    if redacted:
        log.warning(
            "audit_credential_redacted",
            event_id=str(record.event.event_id),
            fields=redacted,
            hint="the producer's payload policy let a credential through; check its configuration",
        )
    return document
