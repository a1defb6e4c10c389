"""Subscriptions and preferences as library calls, async and sync, in the caller's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from activity_producer.dsn import for_sqlalchemy_sync
from activity_producer.preferences import (
    FilterMode,
    InvalidPreferenceError,
    PreferenceUpdate,
    get_preference,
    get_preference_sync,
    update_preference,
    update_preference_sync,
)
from activity_producer.subscriptions import (
    ResourceAccessDeniedError,
    ResourceNotFoundError,
    SubscriptionNotFoundError,
    list_subscriptions,
    list_subscriptions_sync,
    revoke_subscription,
    revoke_subscription_sync,
    subscribe,
    subscribe_sync,
)
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from tests.http.support import add_resource, add_role_binding, new_person, outbox_rows


async def test_subscription_rolls_back_with_the_callers_transaction(engine: AsyncEngine) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)

    async with AsyncSession(engine) as session, session.begin():
        change = await subscribe(session, person.tenant_id, person.principal_id, resource_id)
        await session.rollback()
    async with AsyncSession(engine) as session:
        listed = await list_subscriptions(session, person.tenant_id, person.principal_id)

    assert change.created
    assert change.activity is not None and change.activity.created
    assert listed == []
    assert await outbox_rows(engine, person.tenant_id) == []


async def test_subscription_commits_with_its_activity(engine: AsyncEngine) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)

    async with AsyncSession(engine) as session, session.begin():
        change = await subscribe(
            session, person.tenant_id, person.principal_id, resource_id, "descendants"
        )
    rows = await outbox_rows(engine, person.tenant_id)

    assert change.activity is not None
    assert [row["payload"]["event_id"] for row in rows] == [str(change.activity.event_id)]


async def test_concurrent_subscribes_make_one_subscription_and_one_activity(
    engine: AsyncEngine,
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id)
    await add_role_binding(engine, person.tenant_id, person.principal_id, resource_id)

    async def one_call() -> bool:
        async with AsyncSession(engine) as session, session.begin():
            change = await subscribe(session, person.tenant_id, person.principal_id, resource_id)
            return change.created

    created = await asyncio.gather(*(one_call() for _ in range(8)))
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM subscriptions WHERE tenant_id = :t"),
                {"t": person.tenant_id},
            )
        ).scalar_one()

    assert sorted(created) == [False] * 7 + [True]
    assert stored == 1
    assert len(await outbox_rows(engine, person.tenant_id)) == 1


async def test_revoked_role_binding_denies_subscribing(
    engine: AsyncEngine,
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id)
    await add_role_binding(engine, person.tenant_id, person.principal_id, resource_id, revoked=True)

    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(
            ResourceAccessDeniedError,
            match=f"principal {person.principal_id} may not subscribe to resource {resource_id}",
        ):
            await subscribe(session, person.tenant_id, person.principal_id, resource_id)


async def test_revoking_twice_is_not_found(engine: AsyncEngine) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    async with AsyncSession(engine) as session, session.begin():
        change = await subscribe(session, person.tenant_id, person.principal_id, resource_id)
    async with AsyncSession(engine) as session, session.begin():
        await revoke_subscription(
            session, person.tenant_id, person.principal_id, change.subscription.id
        )

    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(SubscriptionNotFoundError, match="has no active subscription"):
            await revoke_subscription(
                session, person.tenant_id, person.principal_id, change.subscription.id
            )


async def test_invalid_preference_writes_nothing(
    engine: AsyncEngine,
) -> None:
    person = new_person()

    async with AsyncSession(engine) as session, session.begin():
        with pytest.raises(
            InvalidPreferenceError, match=r"custom_actions: .*needs at least one pattern"
        ) as caught:
            await update_preference(
                session, person.tenant_id, person.principal_id, {"filter_mode": "custom"}
            )

    assert caught.value.field == "custom_actions"
    assert await outbox_rows(engine, person.tenant_id) == []


async def test_preference_update_reads_back_in_transaction(
    engine: AsyncEngine,
) -> None:
    person = new_person()

    async with AsyncSession(engine) as session, session.begin():
        change = await update_preference(
            session,
            person.tenant_id,
            person.principal_id,
            PreferenceUpdate(filter_mode=FilterMode.CUSTOM, custom_actions=["transfer.[!x]*"]),
        )
        read = await get_preference(session, person.tenant_id, person.principal_id)

    assert read == change.preference
    assert read.custom_actions == ("transfer.[!x]*",)
    assert change.activity.created


async def test_unknown_tenant_sees_the_default_preference(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        preference = await get_preference(session, uuid4(), uuid4())

    assert preference.is_default
    assert preference.filter_mode is FilterMode.MUTATIONS


@pytest.fixture(scope="module")
def sync_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(for_sqlalchemy_sync(database_url))
    yield engine
    engine.dispose()


def _sync_outbox_types(engine: Engine, tenant_id: UUID) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_type FROM activity_outbox WHERE tenant_id = :t ORDER BY id"),
            {"t": tenant_id},
        )
        return [row.event_type for row in rows]


def _sync_resource(engine: Engine, tenant_id: UUID, owner: UUID) -> UUID:
    resource_id = uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO resources (tenant_id, id, type, owner_principal_id) "
                "VALUES (:t, :id, 'folder', :owner)"
            ),
            {"t": tenant_id, "id": resource_id, "owner": owner},
        )
    return resource_id


def test_sync_subscription_lifecycle_records_both_activities(sync_engine: Engine) -> None:
    person = new_person()
    resource_id = _sync_resource(sync_engine, person.tenant_id, person.principal_id)

    with Session(sync_engine) as session, session.begin():
        created = subscribe_sync(session, person.tenant_id, person.principal_id, resource_id)
        again = subscribe_sync(session, person.tenant_id, person.principal_id, resource_id)
    with Session(sync_engine) as session, session.begin():
        listed = list_subscriptions_sync(session, person.tenant_id, person.principal_id)
        revoke_subscription_sync(
            session, person.tenant_id, person.principal_id, created.subscription.id
        )
    with Session(sync_engine) as session:
        after = list_subscriptions_sync(session, person.tenant_id, person.principal_id)

    assert created.created
    assert not again.created
    assert again.subscription.id == created.subscription.id
    assert [item.id for item in listed] == [created.subscription.id]
    assert after == []
    assert _sync_outbox_types(sync_engine, person.tenant_id) == [
        "subscription.created",
        "subscription.revoked",
    ]


def test_sync_foreign_tenant_resource_not_found(sync_engine: Engine) -> None:
    person = new_person()
    resource_id = _sync_resource(sync_engine, uuid4(), person.principal_id)

    with (
        Session(sync_engine) as session,
        session.begin(),
        pytest.raises(ResourceNotFoundError, match=f"resource {resource_id} does not exist"),
    ):
        subscribe_sync(session, person.tenant_id, person.principal_id, resource_id)


def test_sync_preference_update_matches_the_async_one(sync_engine: Engine) -> None:
    person = new_person()

    with Session(sync_engine) as session, session.begin():
        change = update_preference_sync(
            session,
            person.tenant_id,
            person.principal_id,
            {"filter_mode": "custom", "custom_actions": ["resource.*"]},
        )
    with Session(sync_engine) as session:
        read = get_preference_sync(session, person.tenant_id, person.principal_id)

    assert read == change.preference
    assert read.custom_actions == ("resource.*",)
    assert _sync_outbox_types(sync_engine, person.tenant_id) == ["preference.updated"]


def test_sync_invalid_preference_names_the_field(sync_engine: Engine) -> None:
    person = new_person()

    with (
        Session(sync_engine) as session,
        session.begin(),
        pytest.raises(InvalidPreferenceError, match="filter_mode: Input should be") as caught,
    ):
        update_preference_sync(session, person.tenant_id, person.principal_id, {"filter_mode": "x"})

    assert caught.value.field == "filter_mode"
