"""Replaying edits through the producer library, one transaction per edit.

Edits are spread over concurrent sessions by resource, so two edits of one
page are recorded in file order by the same session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from activity_producer import record_activity_with_outbox
from activity_producer.dsn import for_sqlalchemy_async
from activity_schemas import ActivityEnvelope
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

__all__ = ["replay"]


async def replay(
    database_url: str,
    envelopes: Sequence[ActivityEnvelope],
    concurrency: int,
    rate_per_s: float | None = None,
    on_recorded: Callable[[int], None] | None = None,
) -> float:
    """Record each envelope in its own transaction; return the seconds the replay took.

    With `rate_per_s`, envelopes are started no faster than that rate overall.
    """
    engine = create_async_engine(
        for_sqlalchemy_async(database_url), pool_size=concurrency, max_overflow=0
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    lanes: list[list[tuple[int, ActivityEnvelope]]] = [[] for _ in range(concurrency)]
    for index, envelope in enumerate(envelopes):
        lanes[hash((envelope.tenant_id, envelope.resource_id)) % concurrency].append(
            (index, envelope)
        )
    started = time.monotonic()

    async def run_lane(lane: list[tuple[int, ActivityEnvelope]]) -> None:
        async with sessions() as session:
            for index, envelope in lane:
                if rate_per_s is not None:
                    delay = started + index / rate_per_s - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                async with session.begin():
                    await record_activity_with_outbox(session, envelope)
                if on_recorded is not None:
                    on_recorded(1)

    try:
        await asyncio.gather(*(run_lane(lane) for lane in lanes))
    finally:
        await engine.dispose()
    return time.monotonic() - started
