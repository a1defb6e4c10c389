"""Correlation ids shared by the activities of one workflow, without passing them by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest
from activity_producer import active_correlation_id, correlation, record_activity_with_outbox
from activity_producer.dsn import for_sqlalchemy_async
from activity_schemas import ActivityEnvelope
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine


def _envelope(**overrides: object) -> ActivityEnvelope:
    fields: dict[str, object] = {
        "tenant_id": uuid4(),
        "actor_principal_id": uuid4(),
        "resource_id": uuid4(),
        "resource_type": "promotion",
        "action": "promotion.requested",
    }
    fields.update(overrides)
    return ActivityEnvelope.model_validate(fields)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    yield engine
    await engine.dispose()


async def _correlation_ids(engine: AsyncEngine, tenant_id: UUID) -> list[UUID]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT correlation_id FROM activities WHERE tenant_id = :t ORDER BY action"),
            {"t": tenant_id},
        )
        return [row.correlation_id for row in rows]


async def test_activities_recorded_inside_a_workflow_share_its_correlation_id(
    engine: AsyncEngine,
) -> None:
    tenant_id, resource_id = uuid4(), uuid4()

    with correlation() as workflow_id:
        async with AsyncSession(engine) as session, session.begin():
            for action in ("promotion.requested", "guardrails.validated", "promotion.merged"):
                await record_activity_with_outbox(
                    session, _envelope(tenant_id=tenant_id, resource_id=resource_id, action=action)
                )

    assert await _correlation_ids(engine, tenant_id) == [workflow_id] * 3


async def test_explicit_correlation_id_wins_over_the_workflow() -> None:
    explicit = uuid4()

    with correlation() as workflow_id:
        implicit_envelope = _envelope()
        explicit_envelope = _envelope(correlation_id=explicit)

    assert implicit_envelope.correlation_id == workflow_id
    assert explicit_envelope.correlation_id == explicit


def test_given_id_is_used_and_blocks_nest() -> None:
    outer_id, inner_id = uuid4(), uuid4()

    with correlation(outer_id):
        with correlation(inner_id):
            inside = _envelope().correlation_id
        after_inner = _envelope().correlation_id
    outside = active_correlation_id()

    assert (inside, after_inner, outside) == (inner_id, outer_id, None)


def test_id_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="workflow failed"), correlation():
        raise RuntimeError("workflow failed")

    assert active_correlation_id() is None


async def test_tasks_started_in_a_workflow_inherit_its_id_and_others_do_not() -> None:
    async def build() -> UUID:
        await asyncio.sleep(0)
        return _envelope().correlation_id

    with correlation() as workflow_id:
        inside = await asyncio.gather(build(), build())
    outside = await asyncio.gather(build(), build())

    assert inside == [workflow_id, workflow_id]
    assert workflow_id not in outside
    assert outside[0] != outside[1]
