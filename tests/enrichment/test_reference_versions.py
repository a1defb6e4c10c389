"""Two enrichment workers' caches against real PostgreSQL: a change committed anywhere reaches both.

Each test warms two `ReferenceStore`s (two workers) on one tenant, changes the
reference data in the database, and resolves the next batch on the store that
saw no invalidating activity: the tenant's version in `reference_versions`
has moved, so that store forgets the tenant and reads it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import asyncpg
import pytest
from activity_producer.dsn import for_sqlalchemy_async
from activity_producer.preferences import update_preference
from activity_producer.subscriptions import revoke_subscription, subscribe
from activity_schemas import ActivityEvent, Delivery
from activity_streams.reference import ReferenceStore
from activity_streams.resolution import BatchResolver
from activity_streams.watchers import Rules
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from tests.enrichment.conftest import World

RULES = Rules(critical_actions=("security.*",))

QUIET_ACTION = "document.edited"
"""An action that invalidates nothing, so only the versions can make a store forget."""

CACHE_TTL_S = 3600.0
"""A lifetime no test reaches, so only the versions can make a store forget."""


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(for_sqlalchemy_async(database_url))
    yield engine
    await engine.dispose()


class Workers:
    """Two workers' stores and resolvers over one pool, each with its own cache."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.stores = (
            ReferenceStore(pool, cache_ttl_s=CACHE_TTL_S),
            ReferenceStore(pool, cache_ttl_s=CACHE_TTL_S),
        )
        self.resolvers = tuple(BatchResolver(store, RULES) for store in self.stores)

    async def recipients(self, worker: int, event: ActivityEvent) -> set[UUID]:
        (outcome,) = await self.resolvers[worker].resolve([event])
        assert isinstance(outcome, Delivery), outcome
        return {recipient.principal_id for recipient in outcome.recipients}


class Tree:
    """root -> folder -> document in one tenant, all owned by `owner`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.owner, self.actor = uuid4(), uuid4()

    async def build(self, default_mode: str | None = "all") -> Tree:
        """Write the tree and, unless `default_mode` is None, the tenant's default preference."""
        self.root = await self.world.resource(owner=self.owner, kind="workspace")
        self.folder = await self.world.resource(self.root, self.owner, "folder")
        self.document = await self.world.resource(self.folder, self.owner)
        if default_mode is not None:
            await self.world.default(default_mode)
        return self

    def edit(self, action: str = QUIET_ACTION) -> ActivityEvent:
        """Return an activity on the document; a `resource.*` one also forgets its own row."""
        return self.world.event(self.actor, self.document, action)


async def _version(pool: asyncpg.Pool, tenant: UUID) -> int | None:
    version: int | None = await pool.fetchval(
        "SELECT version FROM reference_versions WHERE tenant_id = $1", tenant
    )
    return version


async def test_revoked_binding_reaches_other_worker_next_batch(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    delegator = uuid4()
    binding = await world.grant(delegator, tree.folder, "delegator")
    workers = Workers(pool)
    warm = [await workers.recipients(worker, tree.edit()) for worker in (0, 1)]

    await world.revoke(binding)
    workers.stores[0].invalidate(
        [world.event(tree.owner, binding, "role_binding.revoked", resource_type="role_binding")]
    )
    after = [await workers.recipients(worker, tree.edit()) for worker in (0, 1)]

    assert all(delegator in recipients for recipients in warm)
    assert after == [{tree.owner}, {tree.owner}]


async def test_revoked_subscription_reaches_warm_worker(
    world: World, pool: asyncpg.Pool, engine: AsyncEngine
) -> None:
    tree = await Tree(world).build()
    subscriber = uuid4()
    await world.grant(subscriber, tree.root, "viewer")
    async with AsyncSession(engine) as session, session.begin():
        change = await subscribe(session, world.tenant, subscriber, tree.document)
    workers = Workers(pool)
    warm = await workers.recipients(1, tree.edit())

    async with AsyncSession(engine) as session, session.begin():
        await revoke_subscription(session, world.tenant, subscriber, change.subscription.id)
    after = await workers.recipients(1, tree.edit())

    assert warm == {tree.owner, subscriber}
    assert after == {tree.owner}


async def test_muting_preference_reaches_warm_worker(
    world: World, pool: asyncpg.Pool, engine: AsyncEngine
) -> None:
    tree = await Tree(world).build()
    workers = Workers(pool)
    warm = await workers.recipients(1, tree.edit())

    async with AsyncSession(engine) as session, session.begin():
        await update_preference(session, world.tenant, tree.owner, {"filter_mode": "muted"})
    after = await workers.recipients(1, tree.edit())

    assert warm == {tree.owner}
    assert after == set()


async def test_first_grant_without_version_row_reaches_worker(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build(default_mode=None)
    delegator = uuid4()
    workers = Workers(pool)
    warm = await workers.recipients(1, tree.edit("resource.updated"))
    version_before = await _version(pool, world.tenant)

    await world.grant(delegator, tree.folder, "delegator")
    after = await workers.recipients(1, tree.edit("resource.updated"))

    assert version_before is None, "resources alone leave the tenant at version 0"
    assert warm == {tree.owner}
    assert after == {tree.owner, delegator}


async def test_moved_resource_drops_old_folders_delegator(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    delegator = uuid4()
    await world.grant(delegator, tree.folder, "delegator")
    elsewhere = await world.resource(tree.root, tree.owner, "folder")
    workers = Workers(pool)
    warm = await workers.recipients(1, tree.edit())

    await pool.execute(
        "UPDATE resources SET parent_id = $1 WHERE tenant_id = $2 AND id = $3",
        elsewhere,
        world.tenant,
        tree.document,
    )
    after = await workers.recipients(1, tree.edit())

    assert warm == {tree.owner, delegator}
    assert after == {tree.owner}


async def test_inserted_resources_keep_warm_cache(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    await world.grant(uuid4(), tree.folder, "delegator")
    workers = Workers(pool)
    await workers.recipients(1, tree.edit())
    await workers.recipients(1, tree.edit())
    queries_before = workers.stores[1].queries

    for _ in range(3):
        await world.resource(tree.folder, tree.owner)
    await workers.recipients(1, tree.edit())

    assert workers.stores[1].queries - queries_before == 1, "only the versions were read"


async def test_other_tenants_change_keeps_cache(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    other = World(pool)
    other_tree = await Tree(other).build()
    workers = Workers(pool)
    await workers.recipients(1, tree.edit())
    await workers.recipients(1, other_tree.edit())
    queries_before = workers.stores[1].queries

    await other.grant(uuid4(), other_tree.folder, "delegator")
    await workers.recipients(1, tree.edit())

    assert workers.stores[1].queries - queries_before == 1, "only the versions were read"


async def test_cached_store_adds_one_version_query(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    uncached, cached = ReferenceStore(pool), ReferenceStore(pool, cache_ttl_s=CACHE_TTL_S)

    for store in (uncached, cached):
        await BatchResolver(store, RULES).resolve([tree.edit()])

    assert (uncached.queries, cached.queries) == (5, 6)


async def test_revocation_activity_forgets_access_at_once(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    binding = await world.grant(uuid4(), tree.folder, "delegator")
    workers = Workers(pool)
    await workers.recipients(1, tree.edit())
    queries_before = workers.stores[1].queries

    workers.stores[1].invalidate(
        [world.event(tree.owner, binding, "role_binding.revoked", resource_type="role_binding")]
    )
    await workers.recipients(1, tree.edit())

    assert workers.stores[1].queries - queries_before == 3, "versions, then access (2 queries)"
