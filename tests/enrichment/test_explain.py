"""`explain()` and `activity explain` against real PostgreSQL: who is notified and why not."""

from __future__ import annotations

from uuid import uuid4

import asyncpg
import psycopg
import pytest
from activity_pipeline.cli import app
from activity_producer import record_activity_with_outbox
from activity_producer.dsn import for_libpq, for_sqlalchemy_async
from activity_schemas import ActivityEnvelope, Visibility
from activity_streams.errors import EnrichmentError
from activity_streams.explain import explain, load_recorded_event
from activity_streams.watchers import Exclusion
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from typer.testing import CliRunner

from tests.enrichment.conftest import World


async def test_explanation_names_each_rule_and_each_reason_for_leaving_out(
    world: World, pool: asyncpg.Pool
) -> None:
    owner, actor, muted, stranger, outsider, bystander = (uuid4() for _ in range(6))
    folder = await world.resource(owner=owner, kind="folder")
    document = await world.resource(folder, owner)
    await world.grant(actor, folder, "delegator")
    await world.grant(muted, folder, "delegator")
    await world.prefer(muted, "muted")
    await world.subscribe(stranger, document, "resource")
    other_tenant = World(pool)
    await other_tenant.subscribe(outsider, document, "resource")

    explanation = await explain(
        pool, world.event(actor, document), principals=[outsider, bystander]
    )

    verdicts = {v.principal_id: v for v in explanation.verdicts}
    assert verdicts[owner].notified and verdicts[owner].rules == ("owner",)
    assert verdicts[actor].why_not == Exclusion.ACTOR
    assert verdicts[muted].why_not == Exclusion.PREFERENCE
    assert verdicts[muted].rules == (f"role:delegator:{folder}",)
    assert verdicts[stranger].why_not == Exclusion.NO_ACCESS
    assert verdicts[outsider].why_not == Exclusion.TENANT
    assert verdicts[bystander].why_not == Exclusion.NOT_A_WATCHER
    assert f"not notified  {muted}  preference" in explanation.render()


async def test_private_activity_explains_watchers_as_left_out_by_visibility(
    world: World, pool: asyncpg.Pool
) -> None:
    owner, actor = uuid4(), uuid4()
    document = await world.resource(owner=owner)

    explanation = await explain(pool, world.event(actor, document, visibility=Visibility.PRIVATE))

    assert [(v.principal_id, v.why_not) for v in explanation.verdicts] == [
        (owner, Exclusion.VISIBILITY)
    ]


async def test_unknown_recorded_activity_is_reported_with_its_id(pool: asyncpg.Pool) -> None:
    missing = uuid4()

    with pytest.raises(EnrichmentError, match=f"no activity with id {missing}"):
        await load_recorded_event(pool, missing)


def test_explain_command_prints_the_owner_of_a_hypothetical_activity(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, owner, actor, document = uuid4(), uuid4(), uuid4(), uuid4()
    with psycopg.connect(for_libpq(database_url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO resources (tenant_id, id, type, owner_principal_id)"
            " VALUES (%s, %s, 'document', %s)",
            (tenant, document, owner),
        )
    monkeypatch.setenv("ACTIVITY_DATABASE_URL", database_url)

    result = CliRunner().invoke(
        app,
        ["explain", "--tenant", str(tenant), "--actor", str(actor), "--resource", str(document)],
    )

    assert result.exit_code == 0, result.output
    assert f"notified      {owner}  by owner" in result.output


async def test_recorded_activity_is_explained_from_the_activities_table(
    world: World, pool: asyncpg.Pool, database_url: str
) -> None:
    owner, actor = uuid4(), uuid4()
    document = await world.resource(owner=owner)
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    envelope = ActivityEnvelope(
        tenant_id=world.tenant,
        actor_principal_id=actor,
        resource_id=document,
        resource_type="document",
        action="resource.updated",
        payload={"title": "Plan"},
    )
    async with AsyncSession(engine) as session, session.begin():
        recorded = await record_activity_with_outbox(session, envelope)
    await engine.dispose()

    event = await load_recorded_event(pool, recorded.event_id)
    explanation = await explain(pool, event)

    assert event.payload == {"title": "Plan"}
    assert [(v.principal_id, v.notified) for v in explanation.verdicts] == [(owner, True)]
