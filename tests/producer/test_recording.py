"""Recording activities with the outbox, against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from activity_producer import (
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
    tx_activity,
)
from activity_producer.dsn import for_sqlalchemy_async, for_sqlalchemy_sync
from activity_schemas import ActivityEnvelope
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session


def _envelope(**overrides: object) -> ActivityEnvelope:
    fields: dict[str, object] = {
        "tenant_id": uuid4(),
        "actor_principal_id": uuid4(),
        "resource_id": uuid4(),
        "resource_type": "signal",
        "action": "signal.created",
        "payload": {"signal_type": "momentum"},
    }
    fields.update(overrides)
    return ActivityEnvelope.model_validate(fields)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(for_sqlalchemy_async(database_url), pool_size=10)
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine, table: str, envelope: ActivityEnvelope) -> int:
    column = "event_id" if table == "activity_outbox" else "id"
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                f"SELECT count(*) FROM {table} WHERE {column} IN "
                "(SELECT id FROM activities WHERE correlation_id = :c)"
            ),
            {"c": envelope.correlation_id},
        )
        return int(result.scalar_one())


async def test_commit_writes_activity_and_outbox_row(engine: AsyncEngine) -> None:
    envelope = _envelope()

    async with AsyncSession(engine) as session, session.begin():
        recorded = await record_activity_with_outbox(session, envelope)

    assert recorded.created
    assert await _count(engine, "activities", envelope) == 1
    assert await _count(engine, "activity_outbox", envelope) == 1


async def test_rollback_leaves_nothing(engine: AsyncEngine) -> None:
    envelope = _envelope()

    async with AsyncSession(engine) as session, session.begin():
        await record_activity_with_outbox(session, envelope)
        await session.rollback()

    assert await _count(engine, "activities", envelope) == 0


async def test_second_recording_returns_first(engine: AsyncEngine) -> None:
    envelope = _envelope()
    async with AsyncSession(engine) as session, session.begin():
        first = await record_activity_with_outbox(session, envelope)

    async with AsyncSession(engine) as session, session.begin():
        second = await record_activity_with_outbox(session, envelope)

    assert not second.created
    assert second.event_id == first.event_id
    assert await _count(engine, "activity_outbox", envelope) == 1


async def test_concurrent_recordings_record_once(engine: AsyncEngine) -> None:
    envelope = _envelope()

    async def record() -> bool:
        async with AsyncSession(engine) as session, session.begin():
            return (await record_activity_with_outbox(session, envelope)).created

    created = await asyncio.gather(*(record() for _ in range(8)))

    assert created.count(True) == 1
    assert await _count(engine, "activities", envelope) == 1
    assert await _count(engine, "activity_outbox", envelope) == 1


async def test_tx_activity_skips_domain_function_when_recorded(engine: AsyncEngine) -> None:
    envelope = _envelope()
    calls: list[int] = []

    async def domain(session: AsyncSession) -> int:
        calls.append(1)
        return len(calls)

    async with AsyncSession(engine) as session:
        first = await tx_activity(session, envelope, domain)
    async with AsyncSession(engine) as session:
        second = await tx_activity(session, envelope, domain)

    assert first[0] == 1
    assert second[0] is None
    assert calls == [1]


async def test_tx_activity_uses_savepoint_inside_open_transaction(engine: AsyncEngine) -> None:
    envelope = _envelope()

    async def failing(session: AsyncSession) -> None:
        raise RuntimeError("domain change failed")

    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(RuntimeError, match="domain change failed"):
            await tx_activity(session, envelope, failing)
        # The outer transaction is still usable after the savepoint rolled back.
        await session.execute(text("SELECT 1"))

    assert await _count(engine, "activities", envelope) == 0


async def test_sync_session_records_the_same_way(database_url: str, engine: AsyncEngine) -> None:
    envelope = _envelope()
    sync_engine = create_engine(for_sqlalchemy_sync(database_url))

    with Session(sync_engine) as session, session.begin():
        first = record_activity_with_outbox_sync(session, envelope)
    with Session(sync_engine) as session, session.begin():
        second = record_activity_with_outbox_sync(session, envelope)
    sync_engine.dispose()

    assert first.created
    assert not second.created
    assert await _count(engine, "activity_outbox", envelope) == 1
