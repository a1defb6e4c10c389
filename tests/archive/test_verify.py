"""Tamper evidence: `verify` reports each kind of tampering with its location."""

from __future__ import annotations

import gzip
import json
from uuid import UUID, uuid4

import pytest
from activity_sinks.archive import ArchiveStore, SegmentRef, record_commitment
from activity_sinks.chain import canonical_json, record_hash
from activity_sinks.verify import FindingKind, VerifyReport, record_field_hashes, verify_tenant
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.archive.records import audit_record, positioned, write_in_batches

RECORDS = 12
BATCH = 4
"""Three segments of four records each, all on one day."""


@pytest.fixture
def tenant(store: ArchiveStore, signing_key: Ed25519PrivateKey) -> UUID:
    tenant_id = uuid4()
    records = [audit_record(tenant_id, 12 + index) for index in range(RECORDS)]
    write_in_batches(store, signing_key, positioned(records), size=BATCH)
    return tenant_id


def _segments(store: ArchiveStore, tenant: UUID) -> list[SegmentRef]:
    return store.segments(str(tenant))


def _rewrite_lines(store: ArchiveStore, ref: SegmentRef, lines: list[bytes]) -> None:
    store.fs.pipe_file(store.full_path(ref.path), gzip.compress(b"\n".join(lines) + b"\n"))


def _verify(store: ArchiveStore, tenant: UUID, key: Ed25519PrivateKey) -> VerifyReport:
    return verify_tenant(store, str(tenant), key.public_key())


def test_untouched_archive_verifies(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    report = _verify(store, tenant, signing_key)

    assert report.ok
    assert (report.segments, report.records, report.findings) == (3, RECORDS, [])


def test_editing_one_byte_of_a_record_is_reported_as_altered_at_its_line(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[1]
    lines = store.read_lines(ref.path)
    lines[2] = lines[2].replace(b'"page.edited"', b'"page.edites"', 1)
    _rewrite_lines(store, ref, lines)

    report = _verify(store, tenant, signing_key)

    assert not report.ok
    [finding] = report.findings
    assert finding.kind is FindingKind.ALTERED
    assert finding.location == f"{ref.path}:3"
    assert "record seq 7" in finding.message


def test_flipping_one_byte_of_the_compressed_file_is_reported_as_unreadable(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[0]
    data = bytearray(store.fs.cat_file(store.full_path(ref.path)))
    data[len(data) // 2] ^= 0x01
    store.fs.pipe_file(store.full_path(ref.path), bytes(data))

    report = _verify(store, tenant, signing_key)

    assert (report.findings[0].kind, report.findings[0].location) == (
        FindingKind.UNREADABLE,
        ref.path,
    )


def test_deleting_one_record_is_reported_as_missing_with_its_seq_and_line(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[1]
    lines = store.read_lines(ref.path)
    del lines[1]
    _rewrite_lines(store, ref, lines)

    report = _verify(store, tenant, signing_key)

    [finding] = report.findings
    assert finding.kind is FindingKind.MISSING_RECORD
    assert finding.location == f"{ref.path}:2"
    assert finding.message == "record seq 6 is missing before line 2; a record was deleted"


def test_swapping_two_records_is_reported_as_reordered(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[2]
    lines = store.read_lines(ref.path)
    lines[0], lines[1] = lines[1], lines[0]
    _rewrite_lines(store, ref, lines)

    report = _verify(store, tenant, signing_key)

    [finding] = report.findings
    assert finding.kind is FindingKind.REORDERED
    assert finding.location == f"{ref.path}:2"
    assert "seq 9" in finding.message
    assert "comes after seq 10 at line 1" in finding.message


def test_duplicating_a_record_is_reported_as_duplicated(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[0]
    lines = store.read_lines(ref.path)
    lines.insert(2, lines[1])
    _rewrite_lines(store, ref, lines)

    report = _verify(store, tenant, signing_key)

    [finding] = report.findings
    assert (finding.kind, finding.location) == (FindingKind.DUPLICATED, f"{ref.path}:3")
    assert "already appears at line 2" in finding.message


def test_deleting_a_whole_segment_is_reported_with_the_missing_range(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    first, deleted, last = _segments(store, tenant)
    store.fs.rm(store.full_path(deleted.path))

    report = _verify(store, tenant, signing_key)

    [finding] = report.findings
    assert (finding.kind, finding.location) == (FindingKind.MISSING_SEGMENT, last.path)
    assert "records seq 5..8 (offsets after 3, before 8)" in finding.message
    assert first.path in finding.message


def test_editing_a_digest_is_reported_as_a_bad_signature(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[0]
    lines = store.read_lines(ref.path)
    digest = json.loads(lines[-1])
    digest["count"] = 3
    lines[-1] = json.dumps(digest).encode()
    _rewrite_lines(store, ref, lines)

    report = _verify(store, tenant, signing_key)

    assert [(f.kind, f.location) for f in report.findings] == [
        (FindingKind.BAD_SIGNATURE, f"{ref.path}:digest")
    ]


def test_rewriting_a_record_and_recomputing_its_chain_breaks_the_signed_digest(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    ref = _segments(store, tenant)[1]
    lines = store.read_lines(ref.path)
    entries = [json.loads(line) for line in lines[:-1]]
    entries[1]["record"]["event"]["action"] = "page.deleted"
    previous = json.loads(lines[-1])["prev_hash"]
    for entry in entries:
        hashes, _ = record_field_hashes(entry)
        entry["hash"] = record_hash(previous, record_commitment(entry, hashes))
        previous = entry["hash"]
    _rewrite_lines(store, ref, [canonical_json(entry) for entry in entries] + lines[-1:])

    report = _verify(store, tenant, signing_key)

    [finding] = report.findings
    assert (finding.kind, finding.location) == (FindingKind.DIGEST_MISMATCH, ref.path)
    assert "do not match the signed digest" in finding.message


def test_another_key_is_reported_as_a_bad_signature(store: ArchiveStore, tenant: UUID) -> None:
    report = _verify(store, tenant, Ed25519PrivateKey.generate())

    assert {f.kind for f in report.findings} == {FindingKind.BAD_SIGNATURE}
    assert len(report.findings) == 3
