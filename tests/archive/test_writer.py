"""The archive writer: signed segments per chain and day, exactly once across replays."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import jsonschema_rs
import pytest
from activity_sinks.archive import ArchiveStore, ArchiveWriter, iter_archive, iter_entries
from activity_sinks.chain import GENESIS_HASH
from activity_sinks.verify import verify_tenant
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.archive.records import audit_record, positioned, write_in_batches

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas/json/activity.audit.schema.json"


def test_batch_becomes_one_signed_segment_per_chain_and_day(
    store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    items = positioned([audit_record(tenant, index) for index in range(20)], partition=2)

    result = ArchiveWriter(store, signing_key).write(items)

    assert result.records == 20
    assert [Path(path).name for path in result.segments] == [
        "test.activity.audit-2-000000000000-000000000009.jsonl.gz",
        "test.activity.audit-2-000000000010-000000000019.jsonl.gz",
    ]
    assert [path.split("/")[1] for path in result.segments] == [
        "date=2026-12-03",
        "date=2026-12-04",
    ]
    digest = json.loads(store.read_lines(result.segments[0])[-1])
    assert (digest["kind"], digest["count"], digest["first_seq"], digest["last_seq"]) == (
        "digest",
        10,
        1,
        10,
    )
    assert digest["prev_digest"] == GENESIS_HASH
    assert verify_tenant(store, str(tenant), signing_key.public_key()).ok


def test_replay_with_other_batch_boundaries_archives_each_record_once(
    store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    items = positioned([audit_record(tenant, 30 + index) for index in range(25)])
    write_in_batches(store, signing_key, items[:17], size=4)
    before = {
        ref.path: store.fs.cat_file(store.full_path(ref.path))
        for ref in store.segments(str(tenant))
    }

    write_in_batches(store, signing_key, items, size=7)

    after = {
        ref.path: store.fs.cat_file(store.full_path(ref.path))
        for ref in store.segments(str(tenant))
    }
    assert {path: after[path] for path in before} == before
    archived = [record.event.event_id for record in iter_archive(store.url, tenant)]
    assert archived == [item.record.event.event_id for item in items]
    assert verify_tenant(store, str(tenant), signing_key.public_key()).ok


def test_a_new_writer_continues_the_chain_from_the_archive(
    store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    items = positioned([audit_record(tenant, 12 + index) for index in range(6)], first_offset=40)
    ArchiveWriter(store, signing_key).write(items[:3])

    ArchiveWriter(store, signing_key).write(items[3:])

    seqs = [archived.entry["seq"] for archived in iter_entries(store, tenant)]
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert verify_tenant(store, str(tenant), signing_key.public_key()).ok


def test_tenants_and_partitions_get_separate_chains(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    first, second = uuid4(), uuid4()
    items = positioned([audit_record(first, 12), audit_record(second, 12)], partition=0)
    items += positioned([audit_record(first, 13)], partition=1, first_offset=0)

    ArchiveWriter(local_store, signing_key).write(items)

    chains = {
        (ref.tenant_id, ref.chain)
        for tenant in (first, second)
        for ref in local_store.segments(str(tenant))
    }
    assert chains == {
        (str(first), ("test.activity.audit", 0)),
        (str(first), ("test.activity.audit", 1)),
        (str(second), ("test.activity.audit", 0)),
    }
    assert [a.entry["seq"] for a in iter_entries(local_store, first)] == [1, 1]


def test_archive_never_holds_a_credential_value_and_keeps_times_in_utc(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    record = audit_record(
        tenant, 15, payload={"api_token": "tok-123", "nested": {"password": "pw"}}
    )
    naive = record.model_copy(
        update={"event": record.event.model_copy(update={"time": datetime(2026, 12, 4, 1, 2, 3)})}
    )

    ArchiveWriter(local_store, signing_key).write(positioned([naive]))

    raw = b"".join(
        line
        for ref in local_store.segments(str(tenant))
        for line in local_store.read_lines(ref.path)
    )
    assert b"tok-123" not in raw
    assert b'"pw"' not in raw
    [archived] = iter_archive(local_store.url, tenant)
    assert archived.event.payload == {
        "api_token": "[redacted]",
        "nested": {"password": "[redacted]"},
    }
    assert archived.event.time == datetime(2026, 12, 4, 1, 2, 3, tzinfo=UTC)


def test_archived_records_match_the_published_audit_schema(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    ArchiveWriter(local_store, signing_key).write(
        positioned([audit_record(tenant, index) for index in range(5)])
    )
    validator = jsonschema_rs.validator_for(
        json.loads(SCHEMA_FILE.read_text()), validate_formats=True
    )

    errors = [
        str(error)
        for archived in iter_entries(local_store, tenant)
        for error in validator.iter_errors(archived.entry["record"])
    ]

    assert errors == []
    assert all(
        archived.entry["record"]["event"]["time"].endswith(("Z", "+00:00"))
        for archived in iter_entries(local_store, tenant)
    )


@pytest.mark.parametrize("batch_size", [1, 500])
def test_segment_name_holds_topic_partition_and_offset_range(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey, batch_size: int
) -> None:
    tenant = uuid4()
    items = positioned(
        [audit_record(tenant, 12), audit_record(tenant, 13)], partition=5, first_offset=7
    )

    write_in_batches(local_store, signing_key, items, size=batch_size)

    names = [ref.name.render() for ref in local_store.segments(str(tenant))]
    expected = {
        1: [
            "test.activity.audit-5-000000000007-000000000007.jsonl.gz",
            "test.activity.audit-5-000000000008-000000000008.jsonl.gz",
        ],
        500: ["test.activity.audit-5-000000000007-000000000008.jsonl.gz"],
    }
    assert names == expected[batch_size]


def test_record_delivered_twice_in_one_batch_is_archived_once(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    [item] = positioned([audit_record(tenant, 12)], first_offset=3)

    result = ArchiveWriter(local_store, signing_key).write([item, item])

    assert (result.records, result.skipped) == (1, 1)
    assert len(list(iter_archive(local_store.url, tenant))) == 1
