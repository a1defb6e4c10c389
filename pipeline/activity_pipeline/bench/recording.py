"""Benchmark of what recording an activity adds to a service's own transaction.

Three kinds of transaction run in rotation in one process, over one
connection to the real PostgreSQL, in a database of the benchmark's own:

- without recording: BEGIN, insert one domain row, COMMIT;
- with recording: the same, plus building an `ActivityEnvelope` and
  `record_activity_with_outbox` (payload policy, event document, and the one
  statement that writes the activity and its outbox row);
- with one bare `SELECT 1` instead: what any extra statement costs on this
  machine at this moment, to read the other figures against.

The figures are wall-clock times of the whole transaction, commit included;
the added time is the difference of the medians, the ratio their quotient.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID, uuid4

from activity_producer import (
    current_recorder,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
)
from activity_producer.dsn import for_sqlalchemy_async, for_sqlalchemy_sync
from activity_producer.relay import RelaySettings
from activity_schemas import ActivityEnvelope
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from activity_pipeline.demo.loader import drop_database, recreate_database

__all__ = [
    "BENCH_DATABASE",
    "TARGET_ADDED_MEDIAN_MS",
    "Driver",
    "RecordingBenchOptions",
    "RecordingBenchResult",
    "run_recording_bench",
]

BENCH_DATABASE = "activity_bench_recording"
"""The benchmark's own database, recreated at the start of each run and dropped at its end."""

TARGET_ADDED_MEDIAN_MS = 1.0
"""Most that recording may add to a caller's transaction at the median, in milliseconds."""

PROGRESS_EVERY = 1_000
"""Rounds (one transaction of each kind) between progress lines."""

_DOMAIN_TABLE = """
CREATE TABLE bench_documents (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    title text NOT NULL,
    body jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

_DOMAIN_CHANGE = text(
    "INSERT INTO bench_documents (id, tenant_id, title, body) "
    "VALUES (:id, :tenant_id, :title, CAST(:body AS jsonb))"
)

_BODY = '{"sections": 3, "words": 1200, "language": "en"}'

_WITHOUT, _WITH_RECORDING, _WITH_ROUND_TRIP, _CALL = 0, 1, 2, 3
"""Indexes into one round's figures: the three kinds of transaction, then the call alone."""

Round = tuple[float, float, float, float]
"""Milliseconds of one round: each kind of transaction, and the recording call within one."""


class Driver(StrEnum):
    """Session kind of the measured service: asyncpg or psycopg."""

    ASYNC = "async"
    SYNC = "sync"


@dataclass(frozen=True)
class RecordingBenchOptions:
    """Sizes of one benchmark run."""

    transactions: int = 3_000
    """Transactions of each kind that are measured."""
    warmup: int = 300
    """Transactions of each kind run first and not measured (connection, caches, plans)."""
    driver: Driver = Driver.ASYNC


@dataclass(frozen=True)
class RecordingBenchResult:
    """Transaction times of each kind, in milliseconds, from the same run."""

    without_ms: Sequence[float]
    with_ms: Sequence[float]
    round_trip_ms: Sequence[float]
    """The same transaction with one bare `SELECT 1` added: the floor of any extra statement."""
    call_ms: Sequence[float]
    """The envelope and `record_activity_with_outbox` alone, inside the recording transaction."""
    prepare_us: Sequence[float]
    options: RecordingBenchOptions

    def render(self) -> str:
        """Return the figures as a small table with the added time and the ratio."""
        without_p50, with_p50 = _median(self.without_ms), _median(self.with_ms)
        without_p99, with_p99 = _p99(self.without_ms), _p99(self.with_ms)
        trip_p50, trip_p99 = _median(self.round_trip_ms), _p99(self.round_trip_ms)
        added = with_p50 - without_p50
        verdict = "met" if added <= TARGET_ADDED_MEDIAN_MS else "NOT met"
        return "\n".join(
            [
                f"recording benchmark: one domain insert per transaction, "
                f"{self.options.driver.value} session, "
                f"{len(self.with_ms):,} transactions of each kind, same run",
                f"{'':12}{'without':>10}{'with':>10}{'added':>10}{'ratio':>9}"
                f"{'SELECT 1':>12}{'added':>10}",
                f"{'median ms':12}{without_p50:>10.3f}{with_p50:>10.3f}{added:>10.3f}"
                f"{with_p50 / without_p50:>8.2f}x{trip_p50:>12.3f}{trip_p50 - without_p50:>10.3f}",
                f"{'p99 ms':12}{without_p99:>10.3f}{with_p99:>10.3f}"
                f"{with_p99 - without_p99:>10.3f}{with_p99 / without_p99:>8.2f}x"
                f"{trip_p99:>12.3f}{trip_p99 - without_p99:>10.3f}",
                "(SELECT 1: the same transaction with one bare extra statement, the floor "
                "of any extra round trip)",
                f"the recording call alone (envelope + record_activity_with_outbox): median "
                f"{_median(self.call_ms):.3f} ms, p99 {_p99(self.call_ms):.3f} ms",
                f"of which in process (envelope, policy, event document), median: "
                f"{_median(self.prepare_us):.1f} us",
                f"target at most {TARGET_ADDED_MEDIAN_MS:.1f} ms added at the median: {verdict}",
            ]
        )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _envelope(tenant_id: UUID, document_id: UUID, actor_id: UUID) -> ActivityEnvelope:
    return ActivityEnvelope(
        tenant_id=tenant_id,
        actor_principal_id=actor_id,
        actor_display_name="Bench Writer",
        resource_id=document_id,
        resource_type="document",
        action="resource.created",
        payload={"title": "Quarterly report", "sections": 3, "words": 1200, "language": "en"},
    )


def _domain_parameters(tenant_id: UUID, document_id: UUID) -> dict[str, object]:
    return {"id": document_id, "tenant_id": tenant_id, "title": "Quarterly report", "body": _BODY}


_ROUND_TRIP = text("SELECT 1")


async def _async_round(engine: AsyncEngine, tenant_id: UUID, actor_id: UUID, index: int) -> Round:
    """Run one transaction of each kind, in an order that rotates with `index`."""

    call_ms = 0.0

    async def timed(kind: int) -> float:
        nonlocal call_ms
        started = time.perf_counter()
        async with AsyncSession(engine) as session, session.begin():
            document_id = uuid4()
            await session.execute(_DOMAIN_CHANGE, _domain_parameters(tenant_id, document_id))
            if kind == _WITH_RECORDING:
                call_started = time.perf_counter()
                envelope = _envelope(tenant_id, document_id, actor_id)
                await record_activity_with_outbox(session, envelope)
                call_ms = (time.perf_counter() - call_started) * 1000.0
            elif kind == _WITH_ROUND_TRIP:
                await session.execute(_ROUND_TRIP)
        return (time.perf_counter() - started) * 1000.0

    figures = [0.0, 0.0, 0.0]
    for offset in range(3):
        kind = (index + offset) % 3
        figures[kind] = await timed(kind)
    return figures[0], figures[1], figures[2], call_ms


def _sync_round(engine: Engine, tenant_id: UUID, actor_id: UUID, index: int) -> Round:
    """Run one transaction of each kind, in an order that rotates with `index`."""

    call_ms = 0.0

    def timed(kind: int) -> float:
        nonlocal call_ms
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            document_id = uuid4()
            session.execute(_DOMAIN_CHANGE, _domain_parameters(tenant_id, document_id))
            if kind == _WITH_RECORDING:
                call_started = time.perf_counter()
                envelope = _envelope(tenant_id, document_id, actor_id)
                record_activity_with_outbox_sync(session, envelope)
                call_ms = (time.perf_counter() - call_started) * 1000.0
            elif kind == _WITH_ROUND_TRIP:
                session.execute(_ROUND_TRIP)
        return (time.perf_counter() - started) * 1000.0

    figures = [0.0, 0.0, 0.0]
    for offset in range(3):
        kind = (index + offset) % 3
        figures[kind] = timed(kind)
    return figures[0], figures[1], figures[2], call_ms


def _prepare_times(samples: int) -> list[float]:
    """Time the in-process part of recording alone, in microseconds."""
    recorder = current_recorder()
    tenant_id, actor_id = uuid4(), uuid4()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        recorder.prepare(_envelope(tenant_id, uuid4(), actor_id))
        times.append((time.perf_counter() - started) * 1_000_000.0)
    return times


async def _measure_async(
    database_url: str, options: RecordingBenchOptions, echo: Callable[[str], None]
) -> list[Round]:
    # One connection: every kind of transaction shares it, so none gets a warmer one.
    engine = create_async_engine(for_sqlalchemy_async(database_url), pool_size=1, max_overflow=0)
    tenant_id, actor_id = uuid4(), uuid4()
    rounds: list[Round] = []
    try:
        for index in range(options.warmup + options.transactions):
            figures = await _async_round(engine, tenant_id, actor_id, index)
            if index >= options.warmup:
                rounds.append(figures)
            if (index + 1) % PROGRESS_EVERY == 0:
                echo(f"  {index + 1:,} rounds")
    finally:
        await engine.dispose()
    return rounds


def _measure_sync(
    database_url: str, options: RecordingBenchOptions, echo: Callable[[str], None]
) -> list[Round]:
    engine = create_engine(for_sqlalchemy_sync(database_url), pool_size=1, max_overflow=0)
    tenant_id, actor_id = uuid4(), uuid4()
    rounds: list[Round] = []
    try:
        for index in range(options.warmup + options.transactions):
            figures = _sync_round(engine, tenant_id, actor_id, index)
            if index >= options.warmup:
                rounds.append(figures)
            if (index + 1) % PROGRESS_EVERY == 0:
                echo(f"  {index + 1:,} rounds")
    finally:
        engine.dispose()
    return rounds


def run_recording_bench(
    options: RecordingBenchOptions, echo: Callable[[str], None] = print
) -> RecordingBenchResult:
    """Measure the three kinds of transaction in a database of its own, then drop it."""
    server_url = RelaySettings().database_url
    database_url = recreate_database(server_url, BENCH_DATABASE)
    try:
        setup = create_engine(for_sqlalchemy_sync(database_url))
        with setup.begin() as conn:
            conn.execute(text(_DOMAIN_TABLE))
        setup.dispose()

        echo(
            f"recording benchmark: {options.warmup:,} warm-up and {options.transactions:,} "
            f"measured transactions of each kind ({options.driver.value} session) ..."
        )
        if options.driver is Driver.ASYNC:
            rounds = asyncio.run(_measure_async(database_url, options, echo))
        else:
            rounds = _measure_sync(database_url, options, echo)
        prepare_us = _prepare_times(options.transactions)
    finally:
        drop_database(server_url, BENCH_DATABASE)
    return RecordingBenchResult(
        without_ms=[figures[_WITHOUT] for figures in rounds],
        with_ms=[figures[_WITH_RECORDING] for figures in rounds],
        round_trip_ms=[figures[_WITH_ROUND_TRIP] for figures in rounds],
        call_ms=[figures[_CALL] for figures in rounds],
        prepare_us=prepare_us,
        options=options,
    )
