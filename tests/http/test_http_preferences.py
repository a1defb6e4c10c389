"""Notification preferences through the Python client against the example host."""

from __future__ import annotations

import pytest
from activity_producer.client import ActivityApiError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.http.conftest import ClientFor
from tests.http.support import new_person, outbox_rows


async def test_preference_defaults_to_mutations(client_for: ClientFor) -> None:
    client = client_for(new_person())

    preference = await client.notifications.get_preferences()

    assert preference.filter_mode == "mutations"
    assert preference.custom_actions == []
    assert preference.is_default
    assert preference.updated_at is None


async def test_custom_preference_is_saved_and_read_back(client_for: ClientFor) -> None:
    client = client_for(new_person())

    saved = await client.notifications.update_preferences(
        filter_mode="custom", custom_actions=["resource.*", "promotion.*", "resource.*"]
    )
    read = await client.notifications.get_preferences()

    assert saved.custom_actions == ["resource.*", "promotion.*"]
    assert read == saved
    assert not read.is_default


async def test_muted_preference_keeps_its_patterns(client_for: ClientFor) -> None:
    client = client_for(new_person())
    await client.notifications.update_preferences("custom", ["chat.*"])

    muted = await client.notifications.update_preferences("muted", ["chat.*"])

    assert muted.filter_mode == "muted"
    assert muted.custom_actions == ["chat.*"]


async def test_preference_update_reaches_the_outbox(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()

    await client_for(person).notifications.update_preferences("all")
    rows = await outbox_rows(engine, person.tenant_id)

    assert [row["event_type"] for row in rows] == ["preference.updated"]
    document = rows[0]["payload"]
    assert document["actor"]["id"] == str(person.principal_id)
    assert document["payload"] == {
        "principal_id": str(person.principal_id),
        "filter_mode": "all",
        "custom_actions": [],
    }


async def test_preferences_of_one_tenant_do_not_show_in_another(client_for: ClientFor) -> None:
    person = new_person()
    elsewhere = new_person()
    elsewhere = type(person)(elsewhere.tenant_id, person.principal_id)
    await client_for(person).notifications.update_preferences("all")

    other = await client_for(elsewhere).notifications.get_preferences()

    assert other.is_default


@pytest.mark.parametrize(
    ("filter_mode", "patterns", "field", "message"),
    [
        ("custom", [], "custom_actions", "needs at least one pattern"),
        ("custom", ["Resource.*"], "custom_actions", "'Resource.\\*' can never match"),
        ("custom", ["chat.[ab"], "custom_actions", "unbalanced"),
        ("custom", ["x" * 65], "custom_actions", "the maximum is 64"),
        ("loud", [], "filter_mode", "Input should be 'muted', 'all', 'mutations' or 'custom'"),
    ],
)
async def test_invalid_preference_is_refused_naming_the_field(
    engine: AsyncEngine,
    client_for: ClientFor,
    filter_mode: str,
    patterns: list[str],
    field: str,
    message: str,
) -> None:
    person = new_person()

    with pytest.raises(ActivityApiError, match=message) as caught:
        await client_for(person).notifications.update_preferences(filter_mode, patterns)

    assert caught.value.status == 422
    problem = caught.value.problem
    assert problem is not None
    assert [(error.field, error.location) for error in problem.errors] == [(field, "body")]
    assert await outbox_rows(engine, person.tenant_id) == []


async def test_tenant_default_applies_until_the_caller_saves_one(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenant_notification_defaults (tenant_id, filter_mode, custom_actions) "
                "VALUES (:t, 'custom', ARRAY['invite.*'])"
            ),
            {"t": person.tenant_id},
        )
    client = client_for(person)

    before = await client.notifications.get_preferences()
    await client.notifications.update_preferences("all")
    after = await client.notifications.get_preferences()

    assert (before.filter_mode, before.custom_actions, before.is_default) == (
        "custom",
        ["invite.*"],
        True,
    )
    assert (after.filter_mode, after.is_default) == ("all", False)
