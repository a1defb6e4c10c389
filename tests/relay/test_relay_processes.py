"""`activity relay` as child processes killed with SIGKILL: no committed row lost, order kept.

Each child is the real command, `python -m activity_pipeline.cli relay`,
configured through `ACTIVITY_*` variables like any deployment.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from activity_producer.dsn import for_libpq
from activity_producer.relay import RelaySettings
from activity_producer.relay.relay import ADVISORY_LOCK_KEY
from activity_schemas.topics import EVENTS_TOPIC

from tests.conftest import wait_until
from tests.relay.conftest import WAIT_S, insert_many, insert_row, read_topic, unsent_rows

KILLS = 3
"""SIGKILLs of the active relay during the 20,000-row run; a standby is started for each."""

COMMITS = 200
ROWS_PER_COMMIT = 100
COMMIT_PAUSE_S = 0.05
"""20,000 rows committed over about 15 s, so that kills land while rows flow."""

CRASH_BATCH_SIZE = 500
"""Small batches, so that a kill falls between produce, acknowledgement and marking."""


class RelayProcesses:
    """Starts `activity relay` children on one outbox and kills them."""

    def __init__(self, settings: RelaySettings, logs: Path) -> None:
        self._environment = {
            **os.environ,
            "ACTIVITY_DATABASE_URL": settings.database_url,
            "ACTIVITY_TOPIC_PREFIX": settings.topic_prefix,
            "ACTIVITY_TOPIC_PARTITIONS": "3",
            "ACTIVITY_RELAY_BATCH_SIZE": str(CRASH_BATCH_SIZE),
            "ACTIVITY_RELAY_POLL_INTERVAL_S": "0.2",
            "ACTIVITY_RELAY_METRICS_PORT": "0",
        }
        self._logs = logs
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with open(self._logs / f"relay-{len(self.children)}.log", "wb") as output:
            child = subprocess.Popen(
                [sys.executable, "-m", "activity_pipeline.cli", "relay"],
                env=self._environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@pytest.fixture
def relays(settings: RelaySettings, tmp_path: Path) -> Iterator[RelayProcesses]:
    processes = RelayProcesses(settings, tmp_path)
    yield processes
    processes.stop_all()


def _sent_rows(database_url: str) -> int:
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM activity_outbox WHERE sent_at IS NOT NULL"
        ).fetchone()
    return int(row[0]) if row else 0


def _lock_holder(database_url: str) -> int | None:
    """The process id in the application name of the session holding the relay's lock."""
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            (ADVISORY_LOCK_KEY,),
        ).fetchone()
    return int(row[0].rsplit(" ", 1)[1]) if row else None


def _has_session(database_url: str, pid: int) -> bool:
    """Whether the relay process `pid` is connected: standing by, or active."""
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"activity-relay % {pid}",),
        ).fetchone()
    return bool(row and row[0])


def test_sigkilled_relays_lose_no_row(settings: RelaySettings, relays: RelayProcesses) -> None:
    committed: set[UUID] = set()

    def write() -> None:
        for _ in range(COMMITS):
            committed.update(insert_many(settings.database_url, ROWS_PER_COMMIT, keys=200))
            time.sleep(COMMIT_PAUSE_S)

    writer = threading.Thread(target=write, daemon=True)
    rng = random.Random(4)
    children = {child.pid: child for child in (relays.start() for _ in range(KILLS + 1))}
    wait_until(lambda: all(_has_session(settings.database_url, p) for p in children), WAIT_S)
    writer.start()

    killed = []
    while writer.is_alive() and len(killed) < KILLS:
        time.sleep(rng.uniform(1.0, 3.0))
        wait_until(lambda: _lock_holder(settings.database_url) in children, WAIT_S, 0.02)
        before = _sent_rows(settings.database_url)
        wait_until(lambda b=before: _sent_rows(settings.database_url) > b, 5.0, 0.01)
        time.sleep(rng.uniform(0.0, 0.05))
        holder = _lock_holder(settings.database_url)
        if holder is None:
            continue
        children.pop(holder).kill()
        killed.append(holder)
    writer.join()
    drained = wait_until(lambda: unsent_rows(settings.database_url) == 0, WAIT_S, 0.2)
    records = read_topic(settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC)

    assert len(killed) >= 2
    assert drained
    assert {r.event_id for r in records} == committed
    assert len(committed) == COMMITS * ROWS_PER_COMMIT


def test_standby_takeover_keeps_key_order(settings: RelaySettings, relays: RelayProcesses) -> None:
    stop_writing = threading.Event()
    outbox_ids: dict[UUID, int] = {}

    def write() -> None:
        with psycopg.connect(for_libpq(settings.database_url)) as conn:
            sequence = 0
            while not stop_writing.is_set():
                row_id, event_id = insert_row(conn, key=f"resource-{sequence % 20}")
                conn.commit()
                outbox_ids[event_id] = row_id
                sequence += 1
                time.sleep(0.002)

    writer = threading.Thread(target=write, daemon=True)
    first, second = relays.start(), relays.start()
    writer.start()

    assert wait_until(lambda: _lock_holder(settings.database_url) is not None, WAIT_S)
    active_pid = _lock_holder(settings.database_url)
    active, standby = (first, second) if active_pid == first.pid else (second, first)
    active.kill()
    active.wait()
    took_over = wait_until(lambda: _lock_holder(settings.database_url) == standby.pid, WAIT_S, 0.05)
    time.sleep(1.0)
    stop_writing.set()
    writer.join()
    drained = wait_until(lambda: unsent_rows(settings.database_url) == 0, WAIT_S, 0.2)
    relays.stop_all()
    records = read_topic(settings.kafka_bootstrap_servers, settings.topic_prefix + EVENTS_TOPIC)

    assert active_pid in (first.pid, second.pid)
    assert took_over
    assert drained
    assert standby.returncode == 0
    assert {r.event_id for r in records} == set(outbox_ids)
    first_seen: dict[tuple[int, str], list[int]] = defaultdict(list)
    seen: set[UUID] = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.event_id not in seen:
            seen.add(record.event_id)
            first_seen[(record.partition, record.key)].append(outbox_ids[record.event_id])
    assert len({key for _, key in first_seen}) == len(first_seen)
    for sequence in first_seen.values():
        assert sequence == sorted(sequence)
