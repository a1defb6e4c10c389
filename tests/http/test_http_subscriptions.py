"""Subscriptions through the Python client against the example host and real PostgreSQL."""

from __future__ import annotations

from uuid import uuid4

import pytest
from activity_producer.client import ActivityApiError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.http.conftest import ClientFor
from tests.http.support import Person, add_resource, add_role_binding, new_person, outbox_rows


async def test_owner_subscribes_lists_and_revokes(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    client = client_for(person)

    created = await client.subscriptions.create(resource_id, scope="descendants")
    listed = await client.subscriptions.list()
    revoked = await client.subscriptions.revoke(created.id)
    after = await client.subscriptions.list()

    assert created.resource_id == resource_id
    assert created.scope == "descendants"
    assert created.revoked_at is None
    assert [item.id for item in listed] == [created.id]
    assert revoked.id == created.id
    assert revoked.revoked_at is not None
    assert after == []


async def test_subscription_changes_reach_the_outbox(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    client = client_for(person)

    created = await client.subscriptions.create(resource_id)
    await client.subscriptions.revoke(created.id)
    rows = await outbox_rows(engine, person.tenant_id)

    assert [row["event_type"] for row in rows] == ["subscription.created", "subscription.revoked"]
    assert {row["message_key"] for row in rows} == {f"{person.tenant_id}:{created.id}"}
    document = rows[0]["payload"]
    assert document["payload"] == {
        "subscription_id": str(created.id),
        "principal_id": str(person.principal_id),
        "resource_id": str(resource_id),
        "scope": "resource",
    }
    assert document["resource"]["parent_id"] == str(resource_id)
    assert document["visibility"] == "private"


async def test_subscribing_again_returns_the_active_subscription_and_records_nothing(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    client = client_for(person)

    first = await client.subscriptions.create(resource_id)
    second = await client.subscriptions.create(resource_id)
    rows = await outbox_rows(engine, person.tenant_id)

    assert second.id == first.id
    assert [row["event_type"] for row in rows] == ["subscription.created"]


async def test_role_binding_on_an_ancestor_allows_subscribing(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    root = await add_resource(engine, person.tenant_id)
    child = await add_resource(engine, person.tenant_id, parent_id=root)
    await add_role_binding(engine, person.tenant_id, person.principal_id, root)

    created = await client_for(person).subscriptions.create(child, scope="resource")

    assert created.resource_id == child


async def test_subscribing_without_access_is_forbidden(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id, owner=uuid4())
    await add_role_binding(engine, person.tenant_id, person.principal_id, resource_id, revoked=True)

    with pytest.raises(ActivityApiError, match="may not subscribe to resource") as caught:
        await client_for(person).subscriptions.create(resource_id)

    assert caught.value.status == 403
    assert caught.value.problem is not None
    assert caught.value.problem.type == "urn:activity-pipeline:problem:resource-access-denied"
    assert await outbox_rows(engine, person.tenant_id) == []


async def test_role_binding_in_another_tenant_gives_no_access(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    resource_id = await add_resource(engine, person.tenant_id)
    await add_role_binding(engine, uuid4(), person.principal_id, resource_id)

    with pytest.raises(ActivityApiError, match="neither owns it nor holds an active role"):
        await client_for(person).subscriptions.create(resource_id)


async def test_another_tenants_resource_is_not_found(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    owner = new_person()
    stranger = new_person()
    resource_id = await add_resource(engine, owner.tenant_id, owner=stranger.principal_id)

    with pytest.raises(ActivityApiError, match=f"resource {resource_id} does not exist") as caught:
        await client_for(stranger).subscriptions.create(resource_id)

    assert caught.value.status == 404


async def test_another_tenants_subscription_cannot_be_revoked_or_listed(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    owner = new_person()
    same_principal_elsewhere = Person(uuid4(), owner.principal_id)
    resource_id = await add_resource(engine, owner.tenant_id, owner=owner.principal_id)
    created = await client_for(owner).subscriptions.create(resource_id)
    other = client_for(same_principal_elsewhere)

    with pytest.raises(ActivityApiError, match="has no active subscription") as caught:
        await other.subscriptions.revoke(created.id)
    listed = await other.subscriptions.list()

    assert caught.value.status == 404
    assert listed == []
    assert [item.id for item in await client_for(owner).subscriptions.list()] == [created.id]


async def test_another_principals_subscription_cannot_be_revoked(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    owner = new_person()
    colleague = new_person(owner.tenant_id)
    resource_id = await add_resource(engine, owner.tenant_id, owner=owner.principal_id)
    created = await client_for(owner).subscriptions.create(resource_id)

    with pytest.raises(ActivityApiError, match=f"no active subscription {created.id}") as caught:
        await client_for(colleague).subscriptions.revoke(created.id)

    assert caught.value.status == 404


async def test_list_filters_by_resource(engine: AsyncEngine, client_for: ClientFor) -> None:
    person = new_person()
    first = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    second = await add_resource(engine, person.tenant_id, owner=person.principal_id)
    client = client_for(person)
    await client.subscriptions.create(first)
    expected = await client.subscriptions.create(second)

    listed = await client.subscriptions.list(resource_id=second)

    assert [item.id for item in listed] == [expected.id]


async def test_unknown_scope_names_the_field(engine: AsyncEngine, client_for: ClientFor) -> None:
    person = new_person()
    client = client_for(person)

    with pytest.raises(ActivityApiError, match="scope") as caught:
        await client.subscriptions.create(uuid4(), scope="tree")

    assert caught.value.status == 422
    assert caught.value.problem is not None
    assert [(e.field, e.location) for e in caught.value.problem.errors] == [("scope", "body")]
