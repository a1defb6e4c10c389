"""Benchmark of the audit archive: records per second into it, and `verify` time per million.

Audit records are built in memory first (not timed), spread over tenants and
the six partitions of the audit topic, then written in sink-sized batches:

- archive: `ArchiveWriter` as the sink runs it: privacy check, per-field hashes,
  the per-tenant chain, one Ed25519-signed digest and one fsync per segment;
- plain: the writer this archive replaces: the same batches as plain gzip JSON
  Lines segments, written and fsynced one after another, without chain or
  signature. The archive writes chains concurrently, which can more than pay
  for its hashing and signing when fsyncs dominate (many small segments).

Kafka is not in the timed path: the figure is what the archive itself takes.
`verify` then reads back every tenant; its time per million records is
extrapolated linearly from the records measured, and printed as such.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

from activity_schemas import ActivityEvent, ActorRef, AuditRecord, ResourceRef
from activity_sinks.archive import ArchivedRecord, ArchiveStore, ArchiveWriter
from activity_sinks.verify import verify_tenant
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["ArchiveBenchOptions", "ArchiveBenchResult", "run_archive_bench"]

PARTITIONS = 6
"""Partitions of the audit topic, as the pipeline creates them."""

START = datetime(2026, 12, 4, tzinfo=UTC)
RECORD_SPACING = timedelta(milliseconds=50)
"""Event time between two generated records: 100,000 records span about 83 minutes."""

MILLION = 1_000_000


@dataclass(frozen=True)
class ArchiveBenchOptions:
    """Options of a run: record count, tenants, batch size and scratch directory."""

    records: int = 100_000
    tenants: int = 20
    batch_size: int = 500
    directory: Path | None = None


@dataclass(frozen=True)
class ArchiveBenchResult:
    """The figures of one run."""

    options: ArchiveBenchOptions
    archive_s: float
    plain_s: float
    verify_s: float
    segments: int
    verified_records: int
    verify_ok: bool

    def render(self) -> str:
        """Return the figures as an aligned text table."""
        records = self.options.records
        archive_rate = records / self.archive_s
        plain_rate = records / self.plain_s
        per_million = self.verify_s / self.verified_records * MILLION
        rows = [
            (
                "records",
                f"{records:,} over {self.options.tenants} tenants, {PARTITIONS} partitions",
            ),
            ("batch size", f"{self.options.batch_size}"),
            ("segments written", f"{self.segments:,} ({records / self.segments:.1f} records each)"),
            ("archive (chained, signed)", f"{archive_rate:,.0f} records/s"),
            ("previous writer (plain, serial)", f"{plain_rate:,.0f} records/s"),
            ("ratio archive / plain", f"{archive_rate / plain_rate:.2f}"),
            ("verify", f"{self.verify_s:.2f} s for {self.verified_records:,} records"),
            ("verify per million", f"{per_million:.0f} s (extrapolated linearly)"),
            ("verify result", "OK" if self.verify_ok else "FAILED"),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _records(options: ArchiveBenchOptions) -> tuple[list[UUID], list[ArchivedRecord]]:
    tenants = [uuid4() for _ in range(options.tenants)]
    offsets = [0] * PARTITIONS
    items = []
    for index in range(options.records):
        tenant = tenants[index % len(tenants)]
        moment = START + RECORD_SPACING * index
        event = ActivityEvent(
            event_id=uuid4(),
            tenant_id=tenant,
            time=moment,
            recorded_at=moment,
            correlation_id=uuid4(),
            actor=ActorRef(id=uuid4(), kind="user", display_name=f"Editor {index % 997}"),
            resource=ResourceRef(id=uuid4(), type="page", parent_id=uuid4()),
            action="page.edited",
            visibility="resource",
            payload={
                "page": f"Page {index}",
                "comment": "copy edit of the lead section",
                "delta": index % 400 - 200,
                "added": index % 300,
                "deleted": index % 50,
                "is_minor": index % 3 == 0,
            },
            targets=("inbox", "resource"),
        )
        record = AuditRecord(event=event, recipients=(uuid4(), uuid4()), processed_at=moment)
        partition = index * 7 % PARTITIONS
        items.append(ArchivedRecord("bench.activity.audit", partition, offsets[partition], record))
        offsets[partition] += 1
    return tenants, items


def _write_plain(root: Path, batch: Sequence[ArchivedRecord]) -> None:
    groups: dict[tuple[UUID, str, int], list[ArchivedRecord]] = defaultdict(list)
    for item in batch:
        groups[
            (item.record.event.tenant_id, str(item.record.event.time.date()), item.partition)
        ].append(item)
    for (tenant, day, partition), items in groups.items():
        directory = root / f"tenant={tenant}" / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"p-{partition}-{items[0].offset}-{items[-1].offset}.jsonl.gz"
        payload = gzip.compress(
            b"".join(item.record.model_dump_json().encode() + b"\n" for item in items), 6, mtime=0
        )
        with open(path, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())


def _timed(
    write: Callable[[Sequence[ArchivedRecord]], object], items: list[ArchivedRecord], size: int
) -> float:
    started = time.perf_counter()
    for start in range(0, len(items), size):
        write(items[start : start + size])
    return time.perf_counter() - started


def run_archive_bench(
    options: ArchiveBenchOptions, echo: Callable[[str], None] = print
) -> ArchiveBenchResult:
    """Write the same records through both designs, then verify the archive; return figures."""
    echo(f"building {options.records:,} audit records in memory")
    tenants, items = _records(options)
    with tempfile.TemporaryDirectory(dir=options.directory) as scratch:
        root = Path(scratch)
        echo("writing the plain segments")
        plain_s = _timed(
            lambda batch: _write_plain(root / "plain", batch), items, options.batch_size
        )

        echo("writing the chained, signed archive")
        store = ArchiveStore(root / "archive")
        signing_key = Ed25519PrivateKey.generate()
        writer = ArchiveWriter(store, signing_key)
        segments = 0

        def write(batch: Sequence[ArchivedRecord]) -> None:
            nonlocal segments
            segments += len(writer.write(batch).segments)

        archive_s = _timed(write, items, options.batch_size)

        echo("verifying every tenant")
        public_key = signing_key.public_key()
        started = time.perf_counter()
        reports = [verify_tenant(store, str(tenant), public_key) for tenant in tenants]
        verify_s = time.perf_counter() - started

    return ArchiveBenchResult(
        options=options,
        archive_s=archive_s,
        plain_s=plain_s,
        verify_s=verify_s,
        segments=segments,
        verified_records=sum(report.records for report in reports),
        verify_ok=all(report.ok for report in reports),
    )
