"""The `activity audit` commands: follow, query, export, verify and erase the audit trail.

`tail` reads a tenant's records live from the audit topic. The others work on
the archive (a directory or fsspec URL, ACTIVITY_ARCHIVE_DIR by default) or on
an export of it.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID, uuid4

import typer
from activity_schemas.topics import AUDIT_TOPIC
from activity_sinks.archive import ArchiveStore
from activity_sinks.archive_errors import ArchiveError
from activity_sinks.erasure import erase_field
from activity_sinks.export import (
    PUBLIC_KEY_NAME,
    AuditQuery,
    chain_starts,
    export_tenant,
    query_archive,
    read_manifest,
)
from activity_sinks.ocsf import to_ocsf
from activity_sinks.settings import SinkSettings
from activity_sinks.signing import load_public_key, load_signing_key
from activity_sinks.verify import verify_tenant
from confluent_kafka import Consumer, KafkaError
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from activity_pipeline.logs import configure_logging

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Analyst commands: follow, query, export, verify and erase the audit trail.",
    no_args_is_help=True,
)

POLL_TIMEOUT_S = 0.5
"""Wait of one poll of the audit topic, in seconds: short, so Ctrl-C stops `tail` at once."""

TABLE_COLUMNS = ("time", "action", "actor", "resource", "event_id")


class OutputFormat(StrEnum):
    """Output format of printed records."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    OCSF = "ocsf"


ArchiveOption = Annotated[
    str | None,
    typer.Option(
        "--archive", help="Archive directory or fsspec URL (default: ACTIVITY_ARCHIVE_DIR)."
    ),
]
TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id.")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]


def _settings() -> SinkSettings:
    return SinkSettings()


def _store(archive: str | None) -> ArchiveStore:
    return ArchiveStore(archive or _settings().archive_dir)


def _signing_key() -> Ed25519PrivateKey:
    configured = _settings().archive_signing_key
    return load_signing_key(configured.get_secret_value() if configured else None)


def _uuid(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return str(UUID(value))
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a UUID", param_hint=option) from exc


def _aware(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time", param_hint=option) from exc
    if parsed.tzinfo is None:
        raise typer.BadParameter(
            f"{value!r} has no UTC offset; write e.g. 2026-12-04T10:00:00+00:00",
            param_hint=option,
        )
    return parsed


def _row(record: dict[str, Any]) -> dict[str, str]:
    event = record["event"]
    return {
        "time": event["time"],
        "action": event["action"],
        "actor": event["actor"]["id"],
        "resource": f"{event['resource']['type']}:{event['resource']['id']}",
        "event_id": event["event_id"],
    }


def _csv_line(values: Iterable[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def _print_records(records: Iterable[dict[str, Any]], output: OutputFormat) -> int:
    count = 0
    for record in records:
        if output is OutputFormat.CSV and count == 0:
            typer.echo(_csv_line(TABLE_COLUMNS))
        count += 1
        if output is OutputFormat.JSON:
            typer.echo(json.dumps(record, ensure_ascii=False))
        elif output is OutputFormat.OCSF:
            typer.echo(json.dumps(to_ocsf(record), ensure_ascii=False))
        elif output is OutputFormat.CSV:
            typer.echo(_csv_line(_row(record).values()))
        else:
            row = _row(record)
            typer.echo(
                f"{row['time']:32}  {row['action']:28}  {row['actor']:36}  "
                f"{row['resource']:48}  {row['event_id']}"
            )
    return count


@audit_app.command()
def tail(
    tenant: TenantOption,
    from_beginning: Annotated[
        bool, typer.Option(help="Start at the oldest record instead of new ones.")
    ] = False,
    output: FormatOption = OutputFormat.JSON,
    max_records: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many records.")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds without records.")
    ] = None,
) -> None:
    """Follow a tenant's records on the audit topic until Ctrl-C."""
    settings = _settings()
    tenant_id = _uuid(tenant, "--tenant")
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"{settings.topic_prefix}activity-audit-tail-{uuid4().hex[:12]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic(AUDIT_TOPIC)])
    seen = 0
    last_record = time.monotonic()
    try:
        while max_records is None or seen < max_records:
            if idle_timeout is not None and time.monotonic() - last_record > idle_timeout:
                break
            message = consumer.poll(POLL_TIMEOUT_S)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    typer.echo(f"audit topic error: {error}", err=True)
                continue
            key = (message.key() or b"").decode("utf-8", errors="replace")
            if not key.startswith(f"{tenant_id}:"):
                continue
            last_record = time.monotonic()
            seen += _print_records([json.loads(message.value() or b"{}")], output)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@audit_app.command()
def query(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant id (default: all).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Earliest event time, ISO 8601 with offset (inclusive).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Latest event time, ISO 8601 with offset (exclusive).")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Actor principal id.")] = None,
    resource: Annotated[str | None, typer.Option(help="Resource id.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Action, e.g. page.edited, or a prefix such as page.*")
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
    limit: Annotated[int | None, typer.Option(min=1, help="Print at most this many.")] = None,
    archive: ArchiveOption = None,
) -> None:
    """Print the archived records that match every filter, oldest segment first."""
    filters = AuditQuery(
        tenant_id=_uuid(tenant, "--tenant"),
        since=_aware(since, "--since"),
        until=_aware(until, "--until"),
        actor_id=_uuid(actor, "--actor"),
        resource_id=_uuid(resource, "--resource"),
        action=action,
    )
    matches = (archived.entry["record"] for archived in query_archive(_store(archive), filters))
    limited = (record for index, record in enumerate(matches) if limit is None or index < limit)
    count = _print_records(limited, output)
    typer.echo(f"{count} records", err=True)


@audit_app.command()
def export(
    tenant: TenantOption,
    out: Annotated[str, typer.Option("--out", help="Directory or fsspec URL to export into.")],
    since: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD, UTC) of the slice.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Last day (YYYY-MM-DD, UTC) of the slice.")
    ] = None,
    ocsf: Annotated[
        bool, typer.Option(help="Also write the records as OCSF API Activity.")
    ] = False,
    archive: ArchiveOption = None,
) -> None:
    """Export a tenant's segments with their signed digests and the public key."""
    tenant_id = _uuid(tenant, "--tenant") or tenant
    try:
        result = export_tenant(
            _store(archive),
            tenant_id,
            ArchiveStore(out),
            _signing_key().public_key(),
            date.fromisoformat(since) if since else None,
            date.fromisoformat(until) if until else None,
            ocsf=ocsf,
        )
    except ArchiveError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(
        f"exported {result.records} records in {len(result.segments)} segments to {out}; "
        f"verify with: activity audit verify --archive {out} --tenant {tenant_id}"
    )
    if result.ocsf_file:
        typer.echo(f"OCSF API Activity records: {result.ocsf_file}")


def _public_key(store: ArchiveStore, public_key: str | None) -> Ed25519PublicKey:
    if public_key:
        return load_public_key(public_key)
    shipped = store.full_path(PUBLIC_KEY_NAME)
    if store.fs.exists(shipped):
        typer.echo(
            f"using the public key shipped in {shipped}; compare its key id with the one "
            "your provider published",
            err=True,
        )
        return load_public_key(store.fs.cat_file(shipped))
    return _signing_key().public_key()


@audit_app.command()
def verify(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant id (default: all).")
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            help="Public key: PEM file or base64 (default: the export's public-key.pem, "
            "else the configured signing key's)."
        ),
    ] = None,
    archive: ArchiveOption = None,
) -> None:
    """Check chain hashes, signed digests, order and completeness; exit 1 on any finding."""
    store = _store(archive)
    key = _public_key(store, public_key)
    manifest = read_manifest(store)
    starts = chain_starts(manifest) if manifest else {}
    tenants = [_uuid(tenant, "--tenant") or tenant] if tenant else store.tenants()
    if not tenants:
        typer.echo(f"no tenant found in {store.url}", err=True)
        raise typer.Exit(code=1)

    failed = False
    for tenant_id in tenants:
        report = verify_tenant(store, tenant_id, key, starts)
        status = "OK" if report.ok else "FAILED"
        if report.segments == 0:
            status, failed = "FAILED (no segments)", True
        typer.echo(
            f"tenant {tenant_id}: {report.segments} segments, {report.records} records: {status}"
        )
        for finding in report.findings:
            typer.echo(f"  {finding.render()}")
        for chain, head in sorted(report.heads.items()):
            typer.echo(f"  chain head {chain}: {head}")
        failed = failed or not report.ok
    if failed:
        raise typer.Exit(code=1)


@audit_app.command()
def erase(
    tenant: TenantOption,
    event_id: Annotated[str, typer.Option("--event-id", help="Event id of the record.")],
    field: Annotated[
        str, typer.Option("--field", help="JSON Pointer of the field, e.g. /event/payload/email.")
    ],
    reason: Annotated[str, typer.Option(help="Why it is erased, e.g. the request's ticket id.")],
    archive: ArchiveOption = None,
) -> None:
    """Erase one personal-data field of one record; the chain still verifies."""
    configure_logging("warning")
    try:
        erased = erase_field(
            _store(archive),
            _uuid(tenant, "--tenant") or tenant,
            _uuid(event_id, "--event-id") or event_id,
            field,
            reason,
            _signing_key(),
        )
    except ArchiveError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"erased {', '.join(erased)} of event {event_id}")
