"""The durable inbox and realtime tokens through the Python client against the example host."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import jwt
import pytest
from activity_pipeline.examples.host_app import API_PREFIX
from activity_producer.client import ActivityApiError
from activity_producer.http import Caller, create_api_app
from activity_producer.http.tokens import DEV_TOKEN_SECRET, TOKEN_SECRET_VARIABLE
from activity_sinks.settings import SinkSettings
from centrifuge import Client, SubscriptionState
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from tests.http.conftest import ClientFor
from tests.http.support import Person, add_notification, new_person, outbox_rows

_START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

CENTRIFUGO_READY_TIMEOUT_S = 60.0
"""How long to wait for the WebSocket subscription; the shared machine may be slow."""


async def _fill_inbox(engine: AsyncEngine, person: Person, count: int) -> list:
    """Store `count` notifications a minute apart; return their event ids, newest first."""
    ids = [
        await add_notification(engine, person, _START + timedelta(minutes=index))
        for index in range(count)
    ]
    return list(reversed(ids))


async def test_inbox_pages_newest_first_with_a_cursor(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    newest_first = await _fill_inbox(engine, person, 5)
    client = client_for(person)

    first = await client.notifications.list(limit=2)
    second = await client.notifications.list(limit=2, cursor=first.next_cursor)
    last = await client.notifications.list(limit=2, cursor=second.next_cursor)

    seen = [item.event_id for page in (first, second, last) for item in page.items]
    assert seen == newest_first
    assert last.next_cursor is None
    assert first.items[0].notification == {"title": "You were invited"}


async def test_unread_filter_and_read_one(engine: AsyncEngine, client_for: ClientFor) -> None:
    person = new_person()
    newest_first = await _fill_inbox(engine, person, 3)
    client = client_for(person)

    read = await client.notifications.read(newest_first[1])
    again = await client.notifications.read(newest_first[1])
    unread = await client.notifications.list(unread_only=True)

    assert read.read_at is not None
    assert again.read_at == read.read_at
    assert [item.event_id for item in unread.items] == [newest_first[0], newest_first[2]]


async def test_read_all_marks_only_unread_ones(engine: AsyncEngine, client_for: ClientFor) -> None:
    person = new_person()
    newest_first = await _fill_inbox(engine, person, 3)
    client = client_for(person)
    await client.notifications.read(newest_first[0])

    marked = await client.notifications.read_all()
    marked_again = await client.notifications.read_all()
    unread = await client.notifications.list(unread_only=True)

    assert marked == 2
    assert marked_again == 0
    assert unread.items == []


async def test_reads_reach_the_outbox_once_per_change(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    person = new_person()
    newest_first = await _fill_inbox(engine, person, 2)
    client = client_for(person)

    await client.notifications.read(newest_first[0])
    await client.notifications.read(newest_first[0])
    await client.notifications.read_all()
    await client.notifications.read_all()
    rows = await outbox_rows(engine, person.tenant_id)

    assert [row["event_type"] for row in rows] == ["notification.read", "notification.read_all"]
    assert rows[0]["payload"]["payload"] == {"event_id": str(newest_first[0])}
    assert rows[1]["payload"]["payload"] == {"marked_read": 1}


async def test_another_tenants_notification_is_not_found(
    engine: AsyncEngine, client_for: ClientFor
) -> None:
    owner = new_person()
    elsewhere = Person(uuid4(), owner.principal_id)
    [event_id] = await _fill_inbox(engine, owner, 1)
    other = client_for(elsewhere)

    with pytest.raises(ActivityApiError, match=f"no notification of event {event_id}") as caught:
        await other.notifications.read(event_id)
    page = await other.notifications.list()
    marked = await other.notifications.read_all()

    assert caught.value.status == 404
    assert page.items == []
    assert marked == 0
    assert (await client_for(owner).notifications.list(unread_only=True)).items[0].read_at is None


async def test_altered_cursor_is_refused_naming_the_field(client_for: ClientFor) -> None:
    client = client_for(new_person())

    with pytest.raises(ActivityApiError, match="is not one this API issued") as caught:
        await client.notifications.list(cursor="bm90LWEtY3Vyc29y")

    assert caught.value.problem is not None
    assert [(e.field, e.location) for e in caught.value.problem.errors] == [("cursor", "query")]


async def test_limit_out_of_range_names_field(client_for: ClientFor) -> None:
    client = client_for(new_person())

    with pytest.raises(ActivityApiError, match="limit: Input should be less than or equal to 200"):
        await client.notifications.list(limit=201)


async def test_malformed_event_id_is_refused_naming_the_field(host_app: FastAPI) -> None:
    person = new_person()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=host_app), base_url="http://host.test"
    ) as http:
        response = await http.post(
            f"{API_PREFIX}/notifications/not-a-uuid/read",
            headers={"X-Tenant-Id": str(person.tenant_id), "X-Principal-Id": str(uuid4())},
        )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "event_id"
    assert response.json()["errors"][0]["location"] == "path"


async def test_missing_caller_headers_give_401_problem(host_app: FastAPI) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=host_app), base_url="http://host.test"
    ) as http:
        response = await http.get(f"{API_PREFIX}/notifications")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("header X-Tenant-Id is missing")
    assert response.json()["instance"] == f"{API_PREFIX}/notifications"


async def test_realtime_token_names_the_caller(client_for: ClientFor) -> None:
    person = new_person()

    issued = await client_for(person).realtime.token()
    secret = os.environ.get(TOKEN_SECRET_VARIABLE, DEV_TOKEN_SECRET)
    claims = jwt.decode(issued.token, secret, algorithms=["HS256"])

    assert claims["sub"] == str(person.principal_id)
    assert claims["exp"] == int(issued.expires_at.timestamp())
    assert issued.inbox_channel == f"inbox:{person.tenant_id}#{person.principal_id}"


async def test_realtime_token_subscribes_inbox_channel(
    client_for: ClientFor, sink_settings: SinkSettings
) -> None:
    person = new_person()
    issued = await client_for(person).realtime.token()
    websocket_url = sink_settings.centrifugo_api_url.replace("http://", "ws://").replace(
        "/api", "/connection/websocket"
    )
    centrifuge = Client(websocket_url, token=issued.token, proxy=None)
    subscription = centrifuge.new_subscription(issued.inbox_channel)

    try:
        await centrifuge.connect()
        await subscription.subscribe()
        await asyncio.wait_for(subscription.ready(), CENTRIFUGO_READY_TIMEOUT_S)
        state = subscription.state
    finally:
        await centrifuge.disconnect()

    assert state is SubscriptionState.SUBSCRIBED


async def test_unreachable_database_gives_500_problem() -> None:
    unreachable = create_async_engine(
        "postgresql+asyncpg://activity:activity@127.0.0.1:1/activity", poolclass=NullPool
    )
    app = create_api_app(lambda: Caller(uuid4(), uuid4()), async_sessionmaker(unreachable))

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://host.test"
    ) as http:
        response = await http.get("/notifications")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "logged it as `request_failed`" in response.json()["detail"]
