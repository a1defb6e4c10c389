"""Fixtures of the HTTP API tests: the example host app in process and its clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from activity_pipeline.examples.host_app import API_PREFIX, create_app
from activity_producer.client import ActivityClient
from activity_producer.dsn import for_sqlalchemy_async
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.http.support import Person


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def host_app(database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(database_url)
    yield app
    await app.state.engine.dispose()


ClientFor = Callable[[Person], ActivityClient]


@pytest.fixture
async def client_for(host_app: FastAPI) -> AsyncIterator[ClientFor]:
    """Return a factory of clients that call the example host in process, as one person."""
    clients: list[ActivityClient] = []

    def make(person: Person) -> ActivityClient:
        client = ActivityClient(
            f"http://host.test{API_PREFIX}",
            headers={
                "X-Tenant-Id": str(person.tenant_id),
                "X-Principal-Id": str(person.principal_id),
            },
            transport=httpx.ASGITransport(app=host_app),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
