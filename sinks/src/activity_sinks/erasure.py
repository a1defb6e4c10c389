"""Erasure of one personal-data field of one archived record, without breaking the chain.

The field's value becomes null and its hash is kept in a signed erasure note.
The record's salt is replaced by the salts of its remaining personal-data
fields, so the erased value can no longer be confirmed by guessing. The
segment is rewritten atomically; `verify` then passes and reports the erasure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from activity_sinks.archive import ArchiveStore
from activity_sinks.archive_errors import ErasureError
from activity_sinks.chain import (
    PERSONAL_DATA_POINTERS,
    canonical_json,
    decode_pointer,
    field_hash,
    field_salt,
    flatten_fields,
    is_personal_data,
)
from activity_sinks.signing import key_id, sign
from activity_sinks.verify import erasure_body

__all__ = ["erase_field"]

log = structlog.get_logger(__name__)


def _set_null(document: dict[str, Any], pointer: str) -> None:
    *parents, last = decode_pointer(pointer)
    node = document
    for token in parents:
        node = node[token]
    node[last] = None


def _erase_entry(
    entry: dict[str, Any], pointer: str, reason: str, signing_key: Ed25519PrivateKey
) -> list[str]:
    erasures: dict[str, Any] = entry.setdefault("erasures", {})
    salts: dict[str, str] | None = entry.get("salts")
    if salts is None:
        record_salt = bytes.fromhex(entry.pop("salt"))
        salts = {
            leaf: field_salt(record_salt, leaf).hex()
            for leaf, _ in flatten_fields(entry["record"])
            if is_personal_data(leaf) and leaf not in erasures
        }
        entry["salts"] = salts

    leaves = [
        (leaf, value)
        for leaf, value in flatten_fields(entry["record"])
        if (leaf == pointer or leaf.startswith(pointer + "/"))
        and leaf not in erasures
        and value not in (None, {}, [])
    ]
    if not leaves:
        raise ErasureError(
            f"event {entry['record']['event']['event_id']} has no value left to erase at "
            f"{pointer}; check the JSON Pointer with `activity audit query --format json`"
        )
    erased_at = datetime.now(UTC).isoformat()
    for leaf, value in leaves:
        note: dict[str, Any] = {
            "field_hash": field_hash(leaf, value, bytes.fromhex(salts.pop(leaf))),
            "erased_at": erased_at,
            "reason": reason,
            "key_id": key_id(signing_key.public_key()),
        }
        event_id = str(entry["record"]["event"]["event_id"])
        note["signature"] = sign(signing_key, canonical_json(erasure_body(event_id, leaf, note)))
        erasures[leaf] = note
        _set_null(entry["record"], leaf)
    return [leaf for leaf, _ in leaves]


def erase_field(
    store: ArchiveStore,
    tenant_id: str | UUID,
    event_id: str | UUID,
    pointer: str,
    reason: str,
    signing_key: Ed25519PrivateKey,
) -> list[str]:
    """Erase the field at `pointer` (and every field below it) of one event; return the leaves."""
    if not is_personal_data(pointer):
        raise ErasureError(
            f"{pointer} is not a personal-data field; erasable fields are "
            f"{', '.join(PERSONAL_DATA_POINTERS)} and the fields below them"
        )
    tenant, event = str(tenant_id), str(event_id)

    for ref in store.segments(tenant):
        lines = store.read_lines(ref.path)
        for index, raw in enumerate(lines):
            entry = json.loads(raw)
            if entry.get("kind") != "record" or entry["record"]["event"]["event_id"] != event:
                continue
            erased = _erase_entry(entry, pointer, reason, signing_key)
            lines[index] = canonical_json(entry)
            store.write_segment(ref.path, lines, replace=True)
            log.info("audit_field_erased", tenant_id=tenant, event_id=event, fields=erased)
            return erased

    raise ErasureError(
        f"event {event} is not in the archive of tenant {tenant} at {store.url}; "
        "check both ids with `activity audit query`"
    )
