"""Fixtures of the sink tests: a pool on the test database, a processor, a private Centrifugo."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from activity_producer.dsn import for_asyncpg
from activity_sinks.access import AccessChecker
from activity_sinks.centrifugo import CentrifugoPublisher
from activity_sinks.delivering import DeliveryProcessor
from activity_sinks.inbox import InboxWriter

from tests.sinks.support import API_KEY, SHARED_API_URL, PrivateCentrifugo

PUBLISH_TIMEOUT_S = 2.0
"""Timeout of one Centrifugo call in these tests: short, so a paused Centrifugo is noticed."""

RETRY_BUDGET_S = 90.0
"""Retry budget in these tests: longer than any outage they simulate."""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(for_asyncpg(database_url), min_size=1, max_size=4)
    yield pool
    await pool.close()


def build_processor(
    pool: asyncpg.Pool, publisher: CentrifugoPublisher, max_bytes: int = 8192
) -> DeliveryProcessor:
    return DeliveryProcessor(
        publisher,
        AccessChecker(pool),
        InboxWriter(pool),
        max_bytes,
        "/activities/{tenant_id}/{event_id}",
    )


@pytest.fixture
async def publisher() -> AsyncIterator[CentrifugoPublisher]:
    publisher = CentrifugoPublisher(SHARED_API_URL, API_KEY, PUBLISH_TIMEOUT_S, RETRY_BUDGET_S)
    await publisher.start()
    yield publisher
    await publisher.stop()


@pytest.fixture
def processor(pool: asyncpg.Pool, publisher: CentrifugoPublisher) -> DeliveryProcessor:
    return build_processor(pool, publisher)


@pytest.fixture
def private_centrifugo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCentrifugo]:
    centrifugo = PrivateCentrifugo(tmp_path_factory.mktemp("centrifugo"))
    centrifugo.start()
    yield centrifugo
    centrifugo.stop()
