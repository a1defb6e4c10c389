"""Verification of a tenant's archive: chain hashes, signed digests, order and completeness.

`verify_tenant` reads every segment of a tenant and reports each altered,
missing, duplicated or reordered record and each missing segment with its
location (segment path, line, sequence number, event id). Erased fields are
reported as erasures, not as alterations.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from activity_sinks.archive import (
    ArchiveStore,
    ChainHead,
    SegmentRef,
    digest_body,
    record_commitment,
)
from activity_sinks.archive_errors import ArchiveError
from activity_sinks.chain import (
    canonical_json,
    commit_fields,
    digest_hash,
    field_salt,
    record_hash,
)
from activity_sinks.signing import key_id, verify_signature

__all__ = [
    "Finding",
    "FindingKind",
    "VerifyReport",
    "erasure_body",
    "record_field_hashes",
    "verify_archive",
    "verify_tenant",
]


class FindingKind(StrEnum):
    """The kind of a finding of `verify`."""

    ALTERED = "altered"
    MISSING_RECORD = "missing-record"
    DUPLICATED = "duplicated"
    REORDERED = "reordered"
    MISSING_SEGMENT = "missing-segment"
    UNREADABLE = "unreadable"
    BAD_SIGNATURE = "bad-signature"
    DIGEST_MISMATCH = "digest-mismatch"
    ERASED = "erased"
    SLICE_START = "slice-start"


INFORMATIONAL = frozenset({FindingKind.ERASED, FindingKind.SLICE_START})
"""Findings that describe the archive without failing verification."""


@dataclass(frozen=True)
class Finding:
    """One thing `verify` found, with where it is."""

    kind: FindingKind
    location: str
    message: str

    def render(self) -> str:
        """Return the finding as one line of text."""
        return f"{self.kind.value:16} {self.location}: {self.message}"


@dataclass
class VerifyReport:
    """The outcome of verifying one tenant's archive."""

    tenant_id: str
    segments: int = 0
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    heads: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every finding is informational (erasures and slice starts)."""
        return all(finding.kind in INFORMATIONAL for finding in self.findings)

    def of_kind(self, kind: FindingKind) -> list[Finding]:
        """Return the findings of one kind."""
        return [finding for finding in self.findings if finding.kind is kind]


def erasure_body(event_id: str, pointer: str, erasure: Mapping[str, Any]) -> dict[str, Any]:
    """Return the signed part of an erasure note."""
    return {
        "event_id": event_id,
        "pointer": pointer,
        **{key: value for key, value in erasure.items() if key != "signature"},
    }


def record_field_hashes(entry: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Return the field hashes of a record line, and what is wrong with its erasures."""
    erasures: Mapping[str, Any] = entry.get("erasures", {})
    salts: Mapping[str, str] | None = entry.get("salts")
    record_salt = bytes.fromhex(entry["salt"]) if "salt" in entry else b""

    def salt_of(pointer: str) -> bytes:
        if salts is not None:
            return bytes.fromhex(salts.get(pointer, ""))
        return field_salt(record_salt, pointer)

    hashes, personal = commit_fields(
        entry["record"],
        salt_of,
        {pointer: erasure["field_hash"] for pointer, erasure in erasures.items()},
    )
    problems = [
        f"erased field {pointer} holds a value again"
        for pointer in sorted(erasures)
        if personal.get(pointer) is not None
    ]
    problems.extend(
        f"erased field {pointer} is no longer in the record"
        for pointer in sorted(set(erasures) - set(personal))
    )
    return hashes, problems


@dataclass
class _Line:
    number: int
    seq: int
    event_id: str
    entry: dict[str, Any]


class _TenantVerifier:
    def __init__(
        self,
        store: ArchiveStore,
        tenant_id: str,
        public_key: Ed25519PublicKey,
        starts: Mapping[tuple[str, int], ChainHead],
    ) -> None:
        self.store = store
        self.public_key = public_key
        self.key_id = key_id(public_key)
        self.starts = starts
        self.report = VerifyReport(tenant_id)

    def add(self, kind: FindingKind, location: str, message: str) -> None:
        self.report.findings.append(Finding(kind, location, message))

    def run(self) -> VerifyReport:
        chains: dict[tuple[str, int], list[SegmentRef]] = defaultdict(list)
        for ref in self.store.segments(self.report.tenant_id):
            chains[ref.chain].append(ref)
        for chain, refs in sorted(chains.items()):
            self._verify_chain(chain, refs)
        return self.report

    def _verify_chain(self, chain: tuple[str, int], refs: list[SegmentRef]) -> None:
        head: ChainHead | None = self.starts.get(chain, ChainHead())
        if chain in self.starts:
            start = self.starts[chain]
            self.add(
                FindingKind.SLICE_START,
                f"{chain[0]}-{chain[1]}",
                f"this slice starts after seq {start.seq} (offset {start.last_offset}); "
                "earlier records are not included",
            )
        previous_path = "the start of the chain"
        for ref in refs:
            self.report.segments += 1
            head = self._verify_segment(ref, head, previous_path)
            previous_path = ref.path
        # TODO: anchor chain heads outside the archive, so a deleted newest segment is detected.
        if head is not None:
            self.report.heads[f"{chain[0]}-{chain[1]}"] = head.digest_hash

    def _verify_segment(
        self, ref: SegmentRef, head: ChainHead | None, previous_path: str
    ) -> ChainHead | None:
        try:
            raw_lines = self.store.read_lines(ref.path)
        except ArchiveError as exc:
            self.add(FindingKind.UNREADABLE, ref.path, str(exc))
            return None

        lines: list[_Line] = []
        digest: dict[str, Any] | None = None
        for number, raw in enumerate(raw_lines, start=1):
            try:
                entry = json.loads(raw)
                kind = entry["kind"]
                if kind == "digest" and number == len(raw_lines):
                    digest = entry
                    continue
                lines.append(
                    _Line(
                        number, int(entry["seq"]), str(entry["record"]["event"]["event_id"]), entry
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                self.add(
                    FindingKind.UNREADABLE,
                    f"{ref.path}:{number}",
                    f"line is not an archive record ({exc.__class__.__name__}: {exc})",
                )
        self.report.records += len(lines)
        if digest is None:
            self.add(
                FindingKind.DIGEST_MISMATCH,
                ref.path,
                "the segment has no digest line at its end; it was truncated or edited",
            )
            return None

        digest_ok = self._check_digest(ref, digest, head, previous_path)
        self._check_records(ref, lines, digest, trusted=digest_ok)
        self._check_erasures(ref, lines)
        if not digest_ok:
            return None
        return ChainHead(
            seq=digest["last_seq"],
            last_hash=digest["last_hash"],
            last_offset=digest["last_offset"],
            digest_hash=digest_hash(digest_body(digest)),
        )

    def _check_digest(
        self,
        ref: SegmentRef,
        digest: dict[str, Any],
        head: ChainHead | None,
        previous_path: str,
    ) -> bool:
        body = digest_body(digest)
        location = f"{ref.path}:digest"
        if body.get("key_id") != self.key_id:
            self.add(
                FindingKind.BAD_SIGNATURE,
                location,
                f"signed by key {body.get('key_id')}, not by the given key {self.key_id}",
            )
            return False
        if not verify_signature(
            self.public_key, canonical_json(body), str(digest.get("signature"))
        ):
            self.add(FindingKind.BAD_SIGNATURE, location, "the digest's signature does not verify")
            return False
        expected = {
            "segment": ref.path,
            "tenant_id": ref.tenant_id,
            "topic": ref.name.topic,
            "partition": ref.name.partition,
            "first_offset": ref.name.first_offset,
            "last_offset": ref.name.last_offset,
        }
        for key, value in expected.items():
            if body.get(key) != value:
                self.add(
                    FindingKind.DIGEST_MISMATCH,
                    location,
                    f"digest says {key}={body.get(key)!r} but the segment is at {value!r}; "
                    "the segment was moved or renamed",
                )
        if head is not None and body["prev_digest"] != head.digest_hash:
            first_missing, last_missing = head.seq + 1, body["first_seq"] - 1
            if last_missing >= first_missing:
                self.add(
                    FindingKind.MISSING_SEGMENT,
                    ref.path,
                    f"records seq {first_missing}..{last_missing} (offsets after "
                    f"{head.last_offset}, before {body['first_offset']}) are missing between "
                    f"{previous_path} and this segment: a segment was deleted",
                )
            else:
                self.add(
                    FindingKind.MISSING_SEGMENT,
                    ref.path,
                    f"the digest does not link to the one of {previous_path}; "
                    "a segment between them was replaced or deleted",
                )
        return True

    def _check_records(
        self, ref: SegmentRef, lines: list[_Line], digest: dict[str, Any], trusted: bool
    ) -> None:
        before = len(self.report.findings)
        by_seq: dict[int, _Line] = {}
        for line in lines:
            if line.seq in by_seq:
                first = by_seq[line.seq]
                self.add(
                    FindingKind.DUPLICATED,
                    f"{ref.path}:{line.number}",
                    f"seq {line.seq} (event {line.event_id}) already appears "
                    f"at line {first.number}",
                )
                continue
            by_seq[line.seq] = line

        unique = [line for line in lines if by_seq.get(line.seq) is line]
        for earlier, later in pairwise(unique):
            if later.seq < earlier.seq:
                self.add(
                    FindingKind.REORDERED,
                    f"{ref.path}:{later.number}",
                    f"seq {later.seq} (event {later.event_id}) comes after seq {earlier.seq} "
                    f"at line {earlier.number}; records were reordered",
                )

        first_seq, last_seq = digest["first_seq"], digest["last_seq"]
        for seq in range(first_seq, last_seq + 1):
            if seq not in by_seq:
                following = next((line for line in unique if line.seq > seq), None)
                where = f"before line {following.number}" if following else "at the end"
                self.add(
                    FindingKind.MISSING_RECORD,
                    f"{ref.path}:{following.number if following else len(lines) + 1}",
                    f"record seq {seq} is missing {where}; a record was deleted",
                )
        for seq in sorted(set(by_seq) - set(range(first_seq, last_seq + 1))):
            self.add(
                FindingKind.DUPLICATED,
                f"{ref.path}:{by_seq[seq].number}",
                f"seq {seq} lies outside this segment's signed range {first_seq}..{last_seq}",
            )

        for line in unique:
            previous = (
                digest["prev_hash"]
                if line.seq == first_seq
                else self._stored_hash(by_seq, line.seq - 1)
            )
            if previous is None:
                continue
            hashes, problems = record_field_hashes(line.entry)
            computed = record_hash(previous, record_commitment(line.entry, hashes))
            location = f"{ref.path}:{line.number}"
            if problems or computed != line.entry.get("hash"):
                detail = "; ".join(problems) or "its content does not match its chain hash"
                self.add(
                    FindingKind.ALTERED,
                    location,
                    f"record seq {line.seq} (event {line.event_id}) was altered: {detail}",
                )

        if trusted and len(self.report.findings) == before:
            first_line, last_line = by_seq.get(first_seq), by_seq.get(last_seq)
            if (
                len(lines) != digest["count"]
                or first_line is None
                or last_line is None
                or first_line.entry.get("hash") != digest["first_hash"]
                or last_line.entry.get("hash") != digest["last_hash"]
            ):
                self.add(
                    FindingKind.DIGEST_MISMATCH,
                    ref.path,
                    "the records do not match the signed digest (count, first or last hash); "
                    "records were rewritten",
                )

    @staticmethod
    def _stored_hash(by_seq: Mapping[int, _Line], seq: int) -> str | None:
        line = by_seq.get(seq)
        return None if line is None else str(line.entry.get("hash"))

    def _check_erasures(self, ref: SegmentRef, lines: Iterable[_Line]) -> None:
        for line in lines:
            for pointer, erasure in sorted(line.entry.get("erasures", {}).items()):
                location = f"{ref.path}:{line.number}"
                body = erasure_body(line.event_id, pointer, erasure)
                if body.get("key_id") != self.key_id or not verify_signature(
                    self.public_key, canonical_json(body), str(erasure.get("signature"))
                ):
                    self.add(
                        FindingKind.BAD_SIGNATURE,
                        location,
                        f"the erasure of {pointer} in event {line.event_id} is not signed "
                        "by the given key",
                    )
                    continue
                self.add(
                    FindingKind.ERASED,
                    location,
                    f"field {pointer} of event {line.event_id} was erased at "
                    f"{erasure.get('erased_at')}: {erasure.get('reason')}",
                )


def verify_tenant(
    store: ArchiveStore,
    tenant_id: str,
    public_key: Ed25519PublicKey,
    starts: Mapping[tuple[str, int], ChainHead] | None = None,
) -> VerifyReport:
    """Verify one tenant's archive; `starts` are where the chains of an exported slice begin."""
    return _TenantVerifier(store, str(tenant_id), public_key, starts or {}).run()


def verify_archive(
    store: ArchiveStore,
    public_key: Ed25519PublicKey,
    starts: Mapping[str, Mapping[tuple[str, int], ChainHead]] | None = None,
) -> list[VerifyReport]:
    """Verify every tenant in the archive."""
    starts = starts or {}
    return [
        verify_tenant(store, tenant, public_key, starts.get(tenant)) for tenant in store.tenants()
    ]
