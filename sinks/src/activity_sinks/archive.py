"""The audit archive: append-only segment files of audit records, per tenant and day.

A segment holds the records of one batch that share a tenant and a day, as
gzip-compressed JSON Lines. Its name derives from the topic, partition and
offset range it came from, and it is written to a temporary name, flushed to
disk and then renamed, so a replay of the same offsets finds the segment
already there and writes nothing.
"""

from __future__ import annotations

import gzip
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from activity_schemas import AuditRecord

__all__ = ["ArchiveWriter", "ArchivedRecord", "iter_archive"]


@dataclass(frozen=True)
class ArchivedRecord:
    """An audit record with the Kafka position it was read from."""

    topic: str
    partition: int
    offset: int
    record: AuditRecord
    raw: bytes


class ArchiveWriter:
    """Writes batches of audit records into segment files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, batch: Sequence[ArchivedRecord]) -> list[Path]:
        """Write one batch as one segment per (tenant, day, partition); return the new paths."""
        groups: dict[tuple[UUID, str, str, int], list[ArchivedRecord]] = defaultdict(list)
        for item in batch:
            day = item.record.event.time.date().isoformat()
            groups[(item.record.event.tenant_id, day, item.topic, item.partition)].append(item)

        written = []
        for (tenant_id, day, topic, partition), items in groups.items():
            first, last = items[0].offset, items[-1].offset
            directory = self.root / f"tenant={tenant_id}" / f"date={day}"
            path = directory / f"{topic}-{partition}-{first:012d}-{last:012d}.jsonl.gz"
            if path.exists():
                continue
            directory.mkdir(parents=True, exist_ok=True)
            self._write_segment(path, items)
            written.append(path)
        return written

    @staticmethod
    def _write_segment(path: Path, items: Sequence[ArchivedRecord]) -> None:
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "wb") as file:
            with gzip.GzipFile(fileobj=file, mode="wb", mtime=0) as compressed:
                for item in items:
                    compressed.write(item.raw)
                    compressed.write(b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def iter_archive(root: Path) -> Iterator[AuditRecord]:
    """Yield every audit record in the archive under `root`, segment by segment."""
    for path in sorted(root.glob("tenant=*/date=*/*.jsonl.gz")):
        with gzip.open(path, "rb") as file:
            for line in file:
                if line.strip():
                    yield AuditRecord.model_validate_json(line)
