"""Reading the archive for analysts: filtered queries and per-tenant verifiable exports.

An export copies a tenant's segments byte for byte, with their signed digests,
and adds the public key and a manifest, so the customer runs the same
`activity audit verify` on it. An OCSF rendering of the records can go beside.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from activity_sinks.archive import (
    ArchivedEntry,
    ArchiveStore,
    ChainHead,
    SegmentRef,
    digest_body,
    iter_entries,
)
from activity_sinks.archive_errors import ArchiveError
from activity_sinks.chain import canonical_json, digest_hash
from activity_sinks.ocsf import to_ocsf
from activity_sinks.signing import key_id, public_key_pem

__all__ = [
    "MANIFEST_NAME",
    "PUBLIC_KEY_NAME",
    "AuditQuery",
    "ExportResult",
    "chain_starts",
    "export_tenant",
    "query_archive",
    "read_manifest",
]

MANIFEST_NAME = "manifest.json"
PUBLIC_KEY_NAME = "public-key.pem"
OCSF_DIRECTORY = "ocsf"


@dataclass(frozen=True)
class AuditQuery:
    """Filters of `audit query`; None matches everything. Times compare with the event's time."""

    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    actor_id: str | None = None
    resource_id: str | None = None
    action: str | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Return whether an archived record (its JSON form) passes every filter."""
        event = record["event"]
        if self.actor_id is not None and event["actor"]["id"] != self.actor_id:
            return False
        if self.resource_id is not None and event["resource"]["id"] != self.resource_id:
            return False
        if self.action is not None and not _action_matches(event["action"], self.action):
            return False
        if self.since is None and self.until is None:
            return True
        time = datetime.fromisoformat(event["time"])
        if self.since is not None and time < self.since:
            return False
        return self.until is None or time < self.until


def _action_matches(action: str, expected: str) -> bool:
    if expected.endswith(".*"):
        return action.startswith(expected[:-1])
    return action == expected


def query_archive(store: ArchiveStore, query: AuditQuery) -> Iterator[ArchivedEntry]:
    """Yield the archived records that match `query`, reading only the days it spans."""
    since_day = query.since.astimezone(UTC).date() if query.since else None
    until_day = query.until.astimezone(UTC).date() if query.until else None
    for archived in iter_entries(store, query.tenant_id, since_day, until_day):
        if query.matches(archived.entry["record"]):
            yield archived


@dataclass
class ExportResult:
    """The outcome of an export: destination, segments, record count and OCSF file."""

    destination: str
    segments: list[str] = field(default_factory=list)
    records: int = 0
    ocsf_file: str | None = None


def _start_of(store: ArchiveStore, first: SegmentRef, all_refs: list[SegmentRef]) -> ChainHead:
    earlier = [
        ref
        for ref in all_refs
        if ref.chain == first.chain and ref.name.last_offset < first.name.first_offset
    ]
    if not earlier:
        return ChainHead()
    previous = max(earlier, key=lambda ref: ref.name.last_offset)
    digest = json.loads(store.read_lines(previous.path)[-1])
    return ChainHead(
        seq=digest["last_seq"],
        last_hash=digest["last_hash"],
        last_offset=digest["last_offset"],
        digest_hash=digest_hash(digest_body(digest)),
    )


def export_tenant(
    store: ArchiveStore,
    tenant_id: str | UUID,
    destination: ArchiveStore,
    public_key: Ed25519PublicKey,
    since: date | None = None,
    until: date | None = None,
    ocsf: bool = False,
) -> ExportResult:
    """Copy a tenant's segments (whole days) with the public key and a manifest."""
    tenant = str(tenant_id)
    all_refs = store.segments(tenant)
    chosen = store.segments(tenant, since, until)
    if not chosen:
        raise ArchiveError(
            f"tenant {tenant} has no segments in {store.url} between {since or 'the start'} "
            f"and {until or 'today'}; check the tenant id and the days"
        )

    result = ExportResult(destination.url)
    starts: dict[str, dict[str, Any]] = {}
    ocsf_lines: list[bytes] = []
    for ref in chosen:
        chain = f"{ref.name.topic}/{ref.name.partition}"
        if chain not in starts:
            start = _start_of(store, ref, all_refs)
            starts[chain] = {
                "seq": start.seq,
                "last_hash": start.last_hash,
                "last_offset": start.last_offset,
                "digest_hash": start.digest_hash,
            }
        data = store.fs.cat_file(store.full_path(ref.path))
        target = destination.full_path(ref.path)
        destination.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        destination.fs.pipe_file(target, data)
        result.segments.append(ref.path)
        for line in store.read_lines(ref.path):
            entry = json.loads(line)
            if entry.get("kind") == "record":
                result.records += 1
                if ocsf:
                    ocsf_lines.append(canonical_json(to_ocsf(entry["record"])))

    destination.fs.pipe_file(destination.full_path(PUBLIC_KEY_NAME), public_key_pem(public_key))
    manifest = {
        "tenant_id": tenant,
        "exported_at": datetime.now(UTC).isoformat(),
        "key_id": key_id(public_key),
        "segments": result.segments,
        "records": result.records,
        "chain_starts": {chain: start for chain, start in starts.items() if start["seq"] > 0},
    }
    destination.fs.pipe_file(
        destination.full_path(MANIFEST_NAME), json.dumps(manifest, indent=2).encode() + b"\n"
    )
    if ocsf:
        relative = f"{OCSF_DIRECTORY}/tenant={tenant}.ocsf.jsonl"
        destination.fs.makedirs(destination.full_path(OCSF_DIRECTORY), exist_ok=True)
        destination.fs.pipe_file(
            destination.full_path(relative), b"".join(line + b"\n" for line in ocsf_lines)
        )
        result.ocsf_file = relative
    return result


def read_manifest(store: ArchiveStore) -> dict[str, Any] | None:
    """Return the manifest of an export, or None when `store` is an archive, not an export."""
    path = store.full_path(MANIFEST_NAME)
    if not store.fs.exists(path):
        return None
    manifest: dict[str, Any] = json.loads(store.fs.cat_file(path))
    return manifest


def chain_starts(manifest: dict[str, Any]) -> dict[tuple[str, int], ChainHead]:
    """Return where each chain of an exported slice begins, from its manifest."""
    starts = {}
    for chain, start in manifest.get("chain_starts", {}).items():
        topic, partition = chain.rsplit("/", 1)
        starts[(topic, int(partition))] = ChainHead(
            seq=start["seq"],
            last_hash=start["last_hash"],
            last_offset=start["last_offset"],
            digest_hash=start["digest_hash"],
        )
    return starts
