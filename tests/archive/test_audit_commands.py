"""The `activity audit` commands on an archive: verify, query, export and erase."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from activity_pipeline.cli import app
from activity_sinks.archive import ArchiveStore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from tests.archive.records import audit_record, positioned, raw_key_base64, write_in_batches

runner = CliRunner()


@pytest.fixture
def archive(tmp_path: Path, signing_key: Ed25519PrivateKey) -> tuple[Path, UUID, UUID]:
    """An archive with six records of one tenant; three of them by one actor."""
    tenant, actor = uuid4(), uuid4()
    records = [
        audit_record(
            tenant,
            12 + index,
            actor_id=actor if index % 2 == 0 else None,
            action="page.created" if index == 0 else "page.edited",
        )
        for index in range(6)
    ]
    write_in_batches(ArchiveStore(tmp_path / "archive"), signing_key, positioned(records), 3)
    return tmp_path / "archive", tenant, actor


@pytest.fixture
def environment(archive: tuple[Path, UUID, UUID], signing_key: Ed25519PrivateKey) -> dict[str, str]:
    return {
        "ACTIVITY_ARCHIVE_DIR": str(archive[0]),
        "ACTIVITY_ARCHIVE_SIGNING_KEY": raw_key_base64(signing_key),
    }


def test_verify_prints_ok_and_the_chain_heads_of_an_untouched_archive(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str]
) -> None:
    result = runner.invoke(app, ["audit", "verify", "--tenant", str(archive[1])], env=environment)

    assert result.exit_code == 0, result.output
    assert f"tenant {archive[1]}: 2 segments, 6 records: OK" in result.output
    assert "chain head test.activity.audit-0:" in result.output


def test_verify_exits_1_and_prints_the_location_of_a_deleted_record(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str]
) -> None:
    [segment] = sorted(archive[0].rglob("*-000000000003-000000000005.jsonl.gz"))
    lines = gzip.decompress(segment.read_bytes()).splitlines()
    segment.write_bytes(gzip.compress(b"\n".join(lines[:1] + lines[2:]) + b"\n"))

    result = runner.invoke(app, ["audit", "verify", "--tenant", str(archive[1])], env=environment)

    assert result.exit_code == 1
    assert "FAILED" in result.output
    assert f"missing-record   {segment.relative_to(archive[0])}:2: record seq 5" in result.output


def test_query_filters_by_actor_and_prints_csv(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str]
) -> None:
    _, tenant, actor = archive

    result = runner.invoke(
        app,
        ["audit", "query", "--tenant", str(tenant), "--actor", str(actor), "--format", "csv"],
        env=environment,
    )

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3
    assert {row["actor"] for row in rows} == {str(actor)}


def test_query_filters_by_action_and_time_range_and_prints_json(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str]
) -> None:
    result = runner.invoke(
        app,
        [
            "audit",
            "query",
            "--tenant",
            str(archive[1]),
            "--action",
            "page.*",
            "--since",
            "2026-12-04T00:03:00+00:00",
            "--until",
            "2026-12-04T00:05:00Z",
            "--format",
            "json",
        ],
        env=environment,
    )

    assert result.exit_code == 0, result.output
    times = [json.loads(line)["event"]["time"] for line in result.stdout.splitlines()]
    assert times == ["2026-12-04T00:03:00Z", "2026-12-04T00:04:00Z"]


def test_query_refuses_a_time_without_offset(environment: dict[str, str]) -> None:
    result = runner.invoke(
        app, ["audit", "query", "--since", "2026-12-04T00:03:00"], env=environment
    )

    assert result.exit_code == 2
    assert "has no UTC offset" in result.output


def test_export_then_verify_of_the_export_uses_its_public_key(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    exported = runner.invoke(
        app,
        ["audit", "export", "--tenant", str(archive[1]), "--out", str(out), "--ocsf"],
        env=environment,
    )

    result = runner.invoke(app, ["audit", "verify", "--archive", str(out)], env={})

    assert exported.exit_code == 0, exported.output
    assert "exported 6 records in 2 segments" in exported.output
    assert result.exit_code == 0, result.output
    assert "using the public key shipped in" in result.output
    assert (out / "ocsf" / f"tenant={archive[1]}.ocsf.jsonl").exists()


def test_erase_then_verify_reports_the_erasure_and_passes(
    archive: tuple[Path, UUID, UUID], environment: dict[str, str]
) -> None:
    listed = runner.invoke(
        app, ["audit", "query", "--tenant", str(archive[1]), "--format", "json"], env=environment
    )
    event_id = json.loads(listed.stdout.splitlines()[2])["event"]["event_id"]

    erased = runner.invoke(
        app,
        [
            "audit",
            "erase",
            "--tenant",
            str(archive[1]),
            "--event-id",
            event_id,
            "--field",
            "/event/actor/display_name",
            "--reason",
            "request 17",
        ],
        env=environment,
    )
    result = runner.invoke(app, ["audit", "verify", "--tenant", str(archive[1])], env=environment)

    assert erased.exit_code == 0, erased.output
    assert result.exit_code == 0, result.output
    assert f"field /event/actor/display_name of event {event_id} was erased" in result.output
