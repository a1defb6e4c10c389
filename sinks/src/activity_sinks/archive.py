"""The audit archive: append-only, hash-chained segment files of audit records.

A segment is a gzip-compressed JSON Lines file under
`tenant=<id>/date=<YYYY-MM-DD>/`, named `<topic>-<partition>-<first>-<last>.jsonl.gz`
after the Kafka offsets it holds. Its lines are the records of one chain (a
tenant's records from one partition of the audit topic), each with its chain
hash, then one signed digest line. The archive itself is the source of truth
for what is archived: a writer skips every record at or below the last offset
its chain holds, so crashes and replays never archive a record twice.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID

import fsspec
from activity_schemas import AuditRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fsspec.implementations.local import LocalFileSystem

from activity_sinks.archive_errors import ArchiveError
from activity_sinks.chain import (
    GENESIS_HASH,
    SALT_BYTES,
    canonical_json,
    commit_fields,
    digest_hash,
    field_salt,
    record_hash,
)
from activity_sinks.privacy import enforce_privacy
from activity_sinks.signing import key_id, sign

__all__ = [
    "DIGEST_VERSION",
    "ArchiveStore",
    "ArchiveWriter",
    "ArchivedEntry",
    "ArchivedRecord",
    "ChainHead",
    "SegmentName",
    "SegmentRef",
    "WriteResult",
    "digest_body",
    "iter_archive",
    "iter_entries",
    "record_commitment",
]

SEGMENT_SUFFIX = ".jsonl.gz"
TEMP_SUFFIX = ".tmp"
OFFSET_DIGITS = 12
"""Zero-padded width of offsets in segment names, so names sort in offset order."""

GZIP_LEVEL = 6
"""zlib's default level: most of level 9's ratio at a fraction of its time."""

DIGEST_VERSION = 1

WRITE_CONCURRENCY = 8
"""Chains whose segments are written and fsynced at once: concurrent fsyncs share the
filesystem journal's commits, and object stores take parallel puts."""


@dataclass(frozen=True)
class ArchivedRecord:
    """An audit record with the Kafka position it was read from."""

    topic: str
    partition: int
    offset: int
    record: AuditRecord


@dataclass(frozen=True)
class SegmentName:
    """The file name of a segment: topic, partition and the offset range it holds."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int

    @classmethod
    def parse(cls, name: str) -> SegmentName | None:
        """Return the parts of a segment file name, or None for any other file."""
        if not name.endswith(SEGMENT_SUFFIX):
            return None
        parts = name[: -len(SEGMENT_SUFFIX)].rsplit("-", 3)
        if len(parts) != 4 or not all(part.isdigit() for part in parts[1:]):
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]), int(parts[3]))

    def render(self) -> str:
        """Return the file name."""
        return (
            f"{self.topic}-{self.partition}-{self.first_offset:0{OFFSET_DIGITS}d}-"
            f"{self.last_offset:0{OFFSET_DIGITS}d}{SEGMENT_SUFFIX}"
        )


@dataclass(frozen=True)
class SegmentRef:
    """The location of a segment in the archive: tenant, day and name."""

    tenant_id: str
    day: str
    name: SegmentName

    @property
    def path(self) -> str:
        """The segment's path relative to the archive root."""
        return f"tenant={self.tenant_id}/date={self.day}/{self.name.render()}"

    @property
    def chain(self) -> tuple[str, int]:
        """The chain the segment belongs to within its tenant: (topic, partition)."""
        return self.name.topic, self.name.partition


class ArchiveStore:
    """The archive's files on any fsspec filesystem; a local directory by default."""

    def __init__(self, url: str | Path) -> None:
        self.url = str(url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)

    def full_path(self, relative: str) -> str:
        """Return the filesystem path of a path relative to the archive root."""
        return f"{self.root}/{relative}"

    def tenants(self) -> list[str]:
        """Return the ids of every tenant with a directory in the archive, sorted."""
        if not self.fs.exists(self.root):
            return []
        names = [
            entry.rstrip("/").rsplit("/", 1)[-1] for entry in self.fs.ls(self.root, detail=False)
        ]
        return sorted(name.removeprefix("tenant=") for name in names if name.startswith("tenant="))

    def segments(
        self, tenant_id: str, since: date | None = None, until: date | None = None
    ) -> list[SegmentRef]:
        """Return a tenant's segments between two days (inclusive), by chain and offset."""
        pattern = self.full_path(f"tenant={tenant_id}/date=*/*{SEGMENT_SUFFIX}")
        found = []
        for path in self.fs.glob(pattern):
            directory, name = path.rsplit("/", 1)
            day = directory.rsplit("/", 1)[-1].removeprefix("date=")
            parsed = SegmentName.parse(name)
            if parsed is None:
                continue
            if since is not None and day < since.isoformat():
                continue
            if until is not None and day > until.isoformat():
                continue
            found.append(SegmentRef(tenant_id, day, parsed))
        return sorted(found, key=lambda ref: (ref.chain, ref.name.first_offset, ref.day))

    def exists(self, relative: str) -> bool:
        """Return whether a file exists at `relative`."""
        return bool(self.fs.exists(self.full_path(relative)))

    def read_lines(self, relative: str) -> list[bytes]:
        """Return the non-empty lines of a segment; raise `ArchiveError` if it is unreadable."""
        try:
            data = gzip.decompress(self.fs.cat_file(self.full_path(relative)))
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(
                f"segment {relative} is not readable gzip: {exc}; "
                "restore it from a backup or an export"
            ) from exc
        return [line for line in data.split(b"\n") if line.strip()]

    def write_segment(self, relative: str, lines: Sequence[bytes], replace: bool = False) -> bool:
        """Write a segment durably and atomically; return False when it exists and not `replace`."""
        full = self.full_path(relative)
        if not replace and self.fs.exists(full):
            return False
        payload = gzip.compress(b"".join(line + b"\n" for line in lines), GZIP_LEVEL, mtime=0)
        if self._local:
            self._write_local(Path(full), payload)
        else:
            # Object stores and the memory filesystem make a single put visible at once.
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(full, payload)
        return True

    @staticmethod
    def _write_local(path: Path, payload: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + TEMP_SUFFIX)
        with open(temporary, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


@dataclass(frozen=True)
class ChainHead:
    """The end of a chain: its last sequence number, record hash, offset and digest hash."""

    seq: int = 0
    last_hash: str = GENESIS_HASH
    last_offset: int = -1
    digest_hash: str = GENESIS_HASH


@dataclass
class WriteResult:
    """The outcome of one batch: segments written, records archived and records skipped."""

    segments: list[str] = field(default_factory=list)
    records: int = 0
    skipped: int = 0


def record_commitment(entry: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """Return what a record's chain hash covers: its position and its per-field hashes."""
    return {
        "seq": entry["seq"],
        "topic": entry["topic"],
        "partition": entry["partition"],
        "offset": entry["offset"],
        "fields": fields,
    }


def digest_body(digest: dict[str, Any]) -> dict[str, Any]:
    """Return the signed part of a digest line: everything but its signature."""
    return {key: value for key, value in digest.items() if key != "signature"}


def _field_hashes(document: dict[str, Any], record_salt: bytes) -> dict[str, str]:
    hashes, _ = commit_fields(document, lambda pointer: field_salt(record_salt, pointer))
    return hashes


@dataclass(frozen=True)
class _PlannedSegment:
    path: str
    lines: list[bytes]
    records: int
    head: ChainHead


class ArchiveWriter:
    """Appends batches of audit records to the archive, one signed segment per chain run."""

    def __init__(self, store: ArchiveStore, signing_key: Ed25519PrivateKey) -> None:
        self.store = store
        self._signing_key = signing_key
        self._key_id = key_id(signing_key.public_key())
        self._heads: dict[tuple[str, str, int], ChainHead] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WRITE_CONCURRENCY, thread_name_prefix="archive-writer")

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop cached chain heads of these partitions; they are read from the archive again."""
        doomed = set(partitions)
        with self._lock:
            for key in [key for key in self._heads if key[1:] in doomed]:
                del self._heads[key]

    def head(self, tenant_id: str, topic: str, partition: int) -> ChainHead:
        """Return where a chain ends, read from its last segment's digest when not cached."""
        key = (tenant_id, topic, partition)
        cached = self._heads.get(key)
        if cached is not None:
            return cached
        segments = [
            ref for ref in self.store.segments(tenant_id) if ref.chain == (topic, partition)
        ]
        head = ChainHead()
        if segments:
            last = max(segments, key=lambda ref: ref.name.last_offset)
            head = self._head_from_segment(last)
        self._heads[key] = head
        return head

    def _head_from_segment(self, ref: SegmentRef) -> ChainHead:
        lines = self.store.read_lines(ref.path)
        try:
            digest = json.loads(lines[-1])
            if digest.get("kind") != "digest":
                raise ValueError("the last line is not a digest")
            return ChainHead(
                seq=digest["last_seq"],
                last_hash=digest["last_hash"],
                last_offset=digest["last_offset"],
                digest_hash=digest_hash(digest_body(digest)),
            )
        except (ValueError, KeyError, IndexError) as exc:
            raise ArchiveError(
                f"cannot read where the chain ends from segment {ref.path}: {exc}; "
                f"run `activity audit verify --tenant {ref.tenant_id}` and restore the segment"
            ) from exc

    def write(self, batch: Sequence[ArchivedRecord]) -> WriteResult:
        """Archive one batch: skip what the archive holds, write one segment per chain and day.

        Chains are written concurrently, the segments of one chain in order, so a
        crash never leaves a later segment of a chain without its predecessor.
        """
        chains: dict[tuple[str, str, int], list[ArchivedRecord]] = defaultdict(list)
        for item in batch:
            chains[(str(item.record.event.tenant_id), item.topic, item.partition)].append(item)

        result = WriteResult()
        with self._lock:
            planned: dict[tuple[str, str, int], list[_PlannedSegment]] = {}
            for chain, items in chains.items():
                head = self.head(*chain)
                # Keyed by offset, so a record delivered twice in one batch is written once.
                unseen = {item.offset: item for item in items if item.offset > head.last_offset}
                fresh = [unseen[offset] for offset in sorted(unseen)]
                result.skipped += len(items) - len(fresh)
                segments = []
                # TODO: merge a day's small segments of a chain into one re-signed segment.
                for run in self._runs_by_day(fresh):
                    segments.append(self._plan_run(*chain, run, head))
                    head = segments[-1].head
                if segments:
                    planned[chain] = segments

            try:
                list(self._pool.map(self._persist_chain, planned.values()))
            except BaseException:
                # Which segments became durable is unknown: read every chain end again.
                self._heads.clear()
                raise
            for chain, segments in planned.items():
                self._heads[chain] = segments[-1].head
                result.segments.extend(segment.path for segment in segments)
                result.records += sum(segment.records for segment in segments)
        return result

    def close(self) -> None:
        """Stop the writer's threads; call once no batch is being written."""
        self._pool.shutdown(wait=True)

    def _persist_chain(self, segments: Sequence[_PlannedSegment]) -> None:
        for segment in segments:
            if not self.store.write_segment(segment.path, segment.lines):
                raise ArchiveError(
                    f"segment {segment.path} already exists, so another writer is archiving "
                    "this partition; run one sink per partition (one consumer group) and restart"
                )

    @staticmethod
    def _runs_by_day(items: Sequence[ArchivedRecord]) -> Iterator[list[ArchivedRecord]]:
        run: list[ArchivedRecord] = []
        for item in items:
            if run and item.record.event.time.date() != run[0].record.event.time.date():
                yield run
                run = []
            run.append(item)
        if run:
            yield run

    def _plan_run(
        self,
        tenant_id: str,
        topic: str,
        partition: int,
        run: Sequence[ArchivedRecord],
        head: ChainHead,
    ) -> _PlannedSegment:
        day = run[0].record.event.time.date().isoformat()
        name = SegmentName(topic, partition, run[0].offset, run[-1].offset)
        ref = SegmentRef(tenant_id, day, name)

        lines: list[bytes] = []
        previous_hash, seq = head.last_hash, head.seq
        first_hash = ""
        for item in run:
            seq += 1
            document = enforce_privacy(item.record)
            salt = os.urandom(SALT_BYTES)
            entry: dict[str, Any] = {
                "kind": "record",
                "seq": seq,
                "topic": topic,
                "partition": partition,
                "offset": item.offset,
                "record": document,
                "salt": salt.hex(),
            }
            entry["hash"] = record_hash(
                previous_hash, record_commitment(entry, _field_hashes(document, salt))
            )
            first_hash = first_hash or entry["hash"]
            previous_hash = entry["hash"]
            lines.append(canonical_json(entry))

        body = {
            "kind": "digest",
            "version": DIGEST_VERSION,
            "tenant_id": tenant_id,
            "topic": topic,
            "partition": partition,
            "segment": ref.path,
            "count": len(run),
            "first_seq": head.seq + 1,
            "last_seq": seq,
            "first_offset": run[0].offset,
            "last_offset": run[-1].offset,
            "prev_hash": head.last_hash,
            "first_hash": first_hash,
            "last_hash": previous_hash,
            "prev_digest": head.digest_hash,
            "key_id": self._key_id,
        }
        signature = sign(self._signing_key, canonical_json(body))
        lines.append(canonical_json({**body, "signature": signature}))
        new_head = ChainHead(seq, previous_hash, run[-1].offset, digest_hash(body))
        return _PlannedSegment(ref.path, lines, len(run), new_head)


@dataclass(frozen=True)
class ArchivedEntry:
    """One record line of the archive with its location."""

    segment: str
    line: int
    entry: dict[str, Any]

    @property
    def record(self) -> AuditRecord:
        """The archived audit record (erased fields are null)."""
        return AuditRecord.model_validate(self.entry["record"])


def iter_entries(
    store: ArchiveStore,
    tenant_id: str | UUID | None = None,
    since: date | None = None,
    until: date | None = None,
) -> Iterator[ArchivedEntry]:
    """Yield the record lines of one tenant (or all), segment by segment, in chain order."""
    tenants = [str(tenant_id)] if tenant_id is not None else store.tenants()
    for tenant in tenants:
        for ref in store.segments(tenant, since, until):
            for number, line in enumerate(store.read_lines(ref.path), start=1):
                entry = json.loads(line)
                if entry.get("kind") == "record":
                    yield ArchivedEntry(ref.path, number, entry)


def iter_archive(root: str | Path, tenant_id: str | UUID | None = None) -> Iterator[AuditRecord]:
    """Yield every audit record in the archive at `root` (a path or fsspec URL)."""
    for archived in iter_entries(ArchiveStore(root), tenant_id):
        yield archived.record
