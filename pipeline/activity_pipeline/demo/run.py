"""The demo: the real edit stream through the whole pipeline, with a summary at the end.

It records every edit through the producer library in its own transaction,
runs the relay and both Faust workers as child processes, listens as one busy
user over a real Centrifugo WebSocket, and waits until every activity has
been delivered and archived before it prints the summary.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import structlog
from activity_pipeline.demo.loader import load_reference_data, recreate_database
from activity_pipeline.demo.observer import InboxListener, TopicReader, end_offsets
from activity_pipeline.demo.replay import replay
from activity_pipeline.demo.wikiticker import (
    DATA_FILE,
    build_reference_data,
    edit_envelope,
    read_edits,
    steward_id,
    tenant_id,
)
from activity_pipeline.processes import PipelineProcesses
from activity_pipeline.workers import create_pipeline_topics, delete_pipeline_topics
from activity_producer.dsn import for_libpq
from activity_producer.relay import RelaySettings
from activity_schemas.topics import DELIVERIES_TOPIC, RECEIPTS_TOPIC
from activity_sinks.archive import iter_archive
from activity_sinks.tokens import connection_token
from activity_streams.channels import inbox_channel

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]

log = structlog.get_logger(__name__)

DEMO_DATABASE = "activity_demo"
"""Database the demo recreates on every run, so that runs never mix."""

PROGRESS_INTERVAL_S = 2.0
"""Seconds between two progress lines."""

DRAIN_TIMEOUT_S = 900.0
"""How long the demo waits after the replay for the last deliveries; it only stops a hang."""


@dataclass(frozen=True)
class DemoOptions:
    """Input, pace and client settings of one demo run."""

    limit: int | None = None
    concurrency: int = 8
    rate_per_s: float | None = None
    watch_principal: UUID | None = None
    watch_tenant: UUID | None = None
    data_file: Path = DATA_FILE
    hmac_secret: str = "dev-hmac-secret-change-me-0123456789"
    websocket_url: str = "ws://127.0.0.1:18000/connection/websocket"
    work_dir: Path = Path(".stack/demo")
    database: str = DEMO_DATABASE


@dataclass
class DemoSummary:
    """Counts and timings of one demo run; `consistent` is true when every count agrees."""

    activities: int = 0
    recorded: int = 0
    produced: int = 0
    enriched: int = 0
    delivered_activities: int = 0
    notifications: int = 0
    shared_publications: int = 0
    expected_by_client: int = 0
    received_by_client: int = 0
    archived: int = 0
    replay_s: float = 0.0
    total_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    watched_channel: str = ""
    archive_dir: str = ""

    @property
    def consistent(self) -> bool:
        """Whether every stage saw every activity, and the client got all it was sent."""
        stages = {self.recorded, self.produced, self.enriched, self.delivered_activities}
        return (
            stages == {self.activities}
            and self.archived == self.activities
            and self.received_by_client == self.expected_by_client
        )

    def percentile(self, fraction: float) -> float:
        """Return the commit-to-delivery latency at `fraction` (0 to 1), in milliseconds."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def render(self) -> str:
        """Return the summary as aligned text lines."""
        rows = [
            ("activities in input", self.activities),
            ("recorded (outbox, committed)", self.recorded),
            ("produced to Kafka", self.produced),
            ("enriched", self.enriched),
            ("delivered to Centrifugo (activities)", self.delivered_activities),
            ("notifications delivered (inbox, one per recipient)", self.notifications),
            ("publications to resource channels", self.shared_publications),
            ("client channel", self.watched_channel),
            ("notifications expected by the client", self.expected_by_client),
            ("notifications received by client", self.received_by_client),
            ("records archived", self.archived),
            ("replay time (s)", f"{self.replay_s:.1f}"),
            ("end-to-end time (s)", f"{self.total_s:.1f}"),
            ("throughput (activities/s)", f"{self.activities / max(self.total_s, 1e-9):,.0f}"),
            ("commit-to-delivery p50 (ms)", f"{self.percentile(0.50):.1f}"),
            ("commit-to-delivery p99 (ms)", f"{self.percentile(0.99):.1f}"),
            ("counts agree", "yes" if self.consistent else "NO"),
            ("archive of this run", self.archive_dir),
        ]
        width = max(len(label) for label, _ in rows)
        return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


@dataclass
class _Progress:
    recorded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    enriched: dict[UUID, None] = field(default_factory=dict)
    receipts: dict[UUID, dict[str, Any]] = field(default_factory=dict)

    def add_recorded(self, count: int) -> None:
        self.recorded += count

    def add_delivery(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.enriched[UUID(value["event"]["event_id"])] = None

    def add_receipt(self, value: dict[str, Any]) -> None:
        with self.lock:
            self.receipts[UUID(value["event_id"])] = value

    def receipt_ids(self) -> set[UUID]:
        with self.lock:
            return set(self.receipts)


def _count_sent(database_url: str) -> int:
    with psycopg.connect(for_libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM activity_outbox WHERE sent_at IS NOT NULL"
        ).fetchone()
        return int(row[0]) if row else 0


def _event_ids(database_url: str) -> set[UUID]:
    with psycopg.connect(for_libpq(database_url)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM activities")}


def _busiest_steward(edits: list[Any]) -> tuple[UUID, UUID]:
    created: dict[str, int] = {}
    for edit in edits:
        if edit.raw["isNew"]:
            created[edit.channel] = created.get(edit.channel, 0) + 1
    channel = max(created, key=lambda name: (created[name], name)) if created else edits[0].channel
    return tenant_id(channel), steward_id(channel)


async def _run(options: DemoOptions, echo: Callable[[str], None]) -> DemoSummary:
    started = time.monotonic()
    run_name = time.strftime("run-%Y%m%dT%H%M%S")
    # Topics and consumer groups of their own keep runs apart, even after an interrupted one.
    relay_settings = RelaySettings(topic_prefix=f"demo-{run_name}.")
    bootstrap = relay_settings.kafka_bootstrap_servers
    summary = DemoSummary()

    echo(f"reading {options.data_file}")
    edits = list(read_edits(options.data_file, options.limit))
    envelopes = [edit_envelope(edit) for edit in edits]
    summary.activities = len(envelopes)
    reference = build_reference_data(edits)
    echo(
        f"loading reference data: {len(reference.resources)} resources, "
        f"{len(reference.role_bindings)} role bindings, {len(reference.subscriptions)} "
        f"subscriptions, {len(reference.preferences)} preferences"
    )
    database_url = recreate_database(relay_settings.database_url, options.database)
    load_reference_data(database_url, reference)
    create_pipeline_topics(relay_settings)

    run_dir = options.work_dir / run_name
    archive_dir = run_dir / "archive"
    summary.archive_dir = str(archive_dir)
    echo(
        f"this run's topics and consumer groups start with {relay_settings.topic_prefix!r} "
        "and are deleted at the end; its archive goes to "
        f"{archive_dir}"
    )
    progress = _Progress()
    readers = [
        TopicReader(
            bootstrap,
            relay_settings.topic_prefix + DELIVERIES_TOPIC,
            end_offsets(bootstrap, relay_settings.topic_prefix + DELIVERIES_TOPIC),
            progress.add_delivery,
        ),
        TopicReader(
            bootstrap,
            relay_settings.topic_prefix + RECEIPTS_TOPIC,
            end_offsets(bootstrap, relay_settings.topic_prefix + RECEIPTS_TOPIC),
            progress.add_receipt,
        ),
    ]
    env = {
        "ACTIVITY_TOPIC_PREFIX": relay_settings.topic_prefix,
        "ACTIVITY_DATABASE_URL": database_url,
        "ACTIVITY_ARCHIVE_DIR": str(archive_dir.resolve()),
    }
    logs = run_dir / "logs"
    processes = PipelineProcesses(env, logs)
    processes.start()
    try:
        for reader in readers:
            reader.start()
        echo(f"starting the relay and the Faust workers (logs in {logs})")
        await asyncio.to_thread(processes.wait_until_ready, bootstrap)

        watch_tenant, watch_principal = _busiest_steward(edits)
        if options.watch_principal is not None:
            watch_principal = options.watch_principal
            watch_tenant = options.watch_tenant or watch_tenant
        channel = inbox_channel(watch_tenant, watch_principal)
        summary.watched_channel = channel
        listener = InboxListener(
            options.websocket_url, connection_token(watch_principal, options.hmac_secret), channel
        )
        await listener.start()
        echo(f"WebSocket client connected as {watch_principal}, subscribed to {channel}")

        replay_started = time.monotonic()
        replay_task = asyncio.create_task(
            replay(
                database_url,
                envelopes,
                options.concurrency,
                options.rate_per_s,
                progress.add_recorded,
            )
        )
        deadline: float | None = None
        run_ids: set[UUID] = set()
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            produced = await asyncio.to_thread(_count_sent, database_url)
            echo(
                f"recorded {progress.recorded}/{summary.activities}  produced {produced}  "
                f"enriched {len(progress.enriched)}  delivered {len(progress.receipts)}  "
                f"client received {listener.publications}"
            )
            if replay_task.done() and deadline is None:
                summary.replay_s = replay_task.result()
                run_ids = await asyncio.to_thread(_event_ids, database_url)
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
            if deadline is not None and (
                run_ids <= progress.receipt_ids() or time.monotonic() > deadline
            ):
                break
        # Give the archive agent and the WebSocket client a moment to catch up.
        archive_wait = time.monotonic() + 30.0
        while time.monotonic() < archive_wait:
            if sum(1 for _ in iter_archive(archive_dir)) >= summary.activities:
                break
            await asyncio.sleep(1.0)
        summary.total_s = time.monotonic() - replay_started
        await listener.stop()
    finally:
        processes.stop()
        for reader in readers:
            reader.stop()
        delete_pipeline_topics(relay_settings)

    run_ids = _event_ids(database_url)
    receipts = {key: value for key, value in progress.receipts.items() if key in run_ids}
    watched = str(watch_principal)
    summary.recorded = len(run_ids)
    summary.produced = _count_sent(database_url)
    summary.enriched = len(run_ids.intersection(progress.enriched))
    summary.delivered_activities = len(receipts)
    summary.notifications = sum(len(r["recipients"]) for r in receipts.values())
    summary.shared_publications = sum(len(r["shared_channels"]) for r in receipts.values())
    summary.expected_by_client = sum(
        1
        for r in receipts.values()
        if r["tenant_id"] == str(watch_tenant) and watched in r["recipients"]
    )
    summary.received_by_client = len(listener.event_ids & run_ids)
    summary.archived = len(
        {record.event.event_id for record in iter_archive(archive_dir)} & run_ids
    )
    summary.latencies_ms = [
        (
            datetime.fromisoformat(r["accepted_at"]) - datetime.fromisoformat(r["recorded_at"])
        ).total_seconds()
        * 1000
        for r in receipts.values()
    ]
    log.info("demo_finished", seconds=round(time.monotonic() - started, 1))
    return summary


def run_demo(options: DemoOptions, echo: Callable[[str], None] = print) -> DemoSummary:
    """Run the demo end to end and return its summary."""
    return asyncio.run(_run(options, echo))
