"""Erasure keeps the chain verifying; exports verify on their own; the OCSF mapping."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from activity_sinks.archive import ArchiveStore, iter_entries
from activity_sinks.archive_errors import ErasureError
from activity_sinks.erasure import erase_field
from activity_sinks.export import chain_starts, export_tenant, read_manifest
from activity_sinks.ocsf import to_ocsf
from activity_sinks.signing import load_public_key
from activity_sinks.verify import FindingKind, verify_tenant
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.archive.records import audit_record, positioned, write_in_batches


@pytest.fixture
def tenant(store: ArchiveStore, signing_key: Ed25519PrivateKey) -> UUID:
    """Eight records over two days (23:54 to 00:01 UTC), in batches of three."""
    tenant_id = uuid4()
    records = [audit_record(tenant_id, 4 + index) for index in range(8)]
    write_in_batches(store, signing_key, positioned(records), size=3)
    return tenant_id


def _event_id(store: ArchiveStore, tenant: UUID, index: int) -> str:
    entries = list(iter_entries(store, tenant))
    return str(entries[index].entry["record"]["event"]["event_id"])


def test_erasing_one_field_keeps_verify_passing_and_reports_the_erasure(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    event_id = _event_id(store, tenant, 4)

    erased = erase_field(store, tenant, event_id, "/event/payload/email", "request 42", signing_key)

    assert erased == ["/event/payload/email"]
    report = verify_tenant(store, str(tenant), signing_key.public_key())
    assert report.ok
    [finding] = report.findings
    assert finding.kind is FindingKind.ERASED
    assert f"field /event/payload/email of event {event_id} was erased" in finding.message
    assert finding.message.endswith(": request 42")
    entry = list(iter_entries(store, tenant))[4].entry
    assert entry["record"]["event"]["payload"] == {"email": None}
    assert "salt" not in entry
    assert "/event/payload/email" not in entry["salts"]
    raw = b"".join(store.read_lines(ref.path)[0] for ref in store.segments(str(tenant)))
    assert b"editor8@example.org" not in raw


def test_erasing_the_actor_name_after_a_payload_field_still_verifies(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey
) -> None:
    event_id = _event_id(store, tenant, 0)
    erase_field(store, tenant, event_id, "/event/payload", "request 7", signing_key)

    erase_field(store, tenant, event_id, "/event/actor/display_name", "request 7", signing_key)

    report = verify_tenant(store, str(tenant), signing_key.public_key())
    assert report.ok
    assert len(report.of_kind(FindingKind.ERASED)) == 2


def test_restoring_an_erased_value_is_reported_as_altered(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    write_in_batches(local_store, signing_key, positioned([audit_record(tenant, 12)]), size=1)
    event_id = _event_id(local_store, tenant, 0)
    erase_field(local_store, tenant, event_id, "/event/payload/email", "request 9", signing_key)
    [ref] = local_store.segments(str(tenant))
    lines = local_store.read_lines(ref.path)
    lines[0] = lines[0].replace(b'"email":null', b'"email":"someone@example.org"')
    local_store.write_segment(ref.path, lines, replace=True)

    report = verify_tenant(local_store, str(tenant), signing_key.public_key())

    assert [f.kind for f in report.findings if f.kind is not FindingKind.ERASED] == [
        FindingKind.ALTERED
    ]
    assert "erased field /event/payload/email holds a value again" in report.findings[0].message


def test_erasing_a_field_that_is_not_personal_data_is_refused(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    with pytest.raises(ErasureError, match=r"/event/action is not a personal-data field"):
        erase_field(local_store, uuid4(), uuid4(), "/event/action", "no", signing_key)


def test_erasing_an_unknown_event_names_the_event_and_tenant(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant, event = uuid4(), uuid4()

    with pytest.raises(
        ErasureError, match=rf"event {event} is not in the archive of tenant {tenant}"
    ):
        erase_field(local_store, tenant, event, "/event/payload", "no", signing_key)


def test_export_verifies_with_its_own_public_key(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    destination = ArchiveStore(tmp_path / "export")

    result = export_tenant(store, tenant, destination, signing_key.public_key(), ocsf=True)

    assert (result.records, len(result.segments)) == (8, 3)
    shipped_key = load_public_key((tmp_path / "export" / "public-key.pem").read_bytes())
    report = verify_tenant(destination, str(tenant), shipped_key)
    assert report.ok and report.records == 8
    ocsf_lines = (tmp_path / "export" / str(result.ocsf_file)).read_text().splitlines()
    assert len(ocsf_lines) == 8
    assert json.loads(ocsf_lines[0])["class_uid"] == 6003


def test_export_of_later_days_verifies_and_says_where_the_slice_starts(
    store: ArchiveStore, tenant: UUID, signing_key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    destination = ArchiveStore(tmp_path / "slice")
    day = store.segments(str(tenant))[-1].day

    export_tenant(
        store, tenant, destination, signing_key.public_key(), since=date.fromisoformat(day)
    )

    manifest = read_manifest(destination)
    assert manifest is not None
    report = verify_tenant(
        destination, str(tenant), signing_key.public_key(), chain_starts(manifest)
    )
    assert report.ok
    [start] = report.of_kind(FindingKind.SLICE_START)
    assert "starts after seq 6" in start.message


def _date(day: str):
    from datetime import date

    return date.fromisoformat(day)


def test_ocsf_mapping_is_an_api_activity_with_the_event_id_and_tenant() -> None:
    tenant = uuid4()
    record = audit_record(tenant, 12, action="page.deleted").model_dump(mode="json")

    mapped = to_ocsf(record)

    assert (mapped["class_uid"], mapped["activity_id"], mapped["type_uid"]) == (6003, 4, 600304)
    assert mapped["metadata"]["uid"] == record["event"]["event_id"]
    assert mapped["metadata"]["tenant_uid"] == str(tenant)
    assert mapped["actor"]["user"]["uid"] == record["event"]["actor"]["id"]
    assert mapped["api"]["operation"] == "page.deleted"
    assert mapped["time"] == int(datetime(2026, 12, 4, 0, 2, tzinfo=UTC).timestamp() * 1000)


def test_erasing_a_field_twice_is_refused_the_second_time(
    local_store: ArchiveStore, signing_key: Ed25519PrivateKey
) -> None:
    tenant = uuid4()
    write_in_batches(local_store, signing_key, positioned([audit_record(tenant, 12)]), size=1)
    event_id = _event_id(local_store, tenant, 0)
    erase_field(local_store, tenant, event_id, "/event/payload", "request 3", signing_key)

    with pytest.raises(ErasureError, match=r"has no value left to erase at /event/payload"):
        erase_field(local_store, tenant, event_id, "/event/payload", "request 3", signing_key)
