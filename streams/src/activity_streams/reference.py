"""Set-based loading and caching of the reference data that batches of activities need.

A batch costs three round trips, whatever its size. The first is one recursive
CTE for every ancestor chain. The second reads subscriptions and role bindings
on every resource of those chains (two queries, run concurrently). The third
reads the preferences of every candidate watcher and the tenants' defaults.
Every query is keyed by (tenant, resource) or (tenant, principal), so no
lookup crosses tenants.

With a cache lifetime above zero, the store keeps what it loaded between
batches and queries only what is missing, after one more round trip that
opens every batch: the reference-data versions of the batch's tenants, which
PostgreSQL triggers bump on every change (`reference_versions`, no row means
version 0). A tenant whose version moved since the store last looked is
forgotten whole, so a change committed anywhere reaches every worker in its
next batch. A batch therefore costs one round trip when everything is cached
and four when nothing is (plus the chain query's repeats, `MAX_CHAIN_ROUNDS`).
`invalidate()` also forgets what the pipeline's own `resource.*`,
`role_binding.*`, `subscription.*` and `preference.*` activities changed,
before the batch that carries them is resolved, without waiting for a query.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from uuid import UUID

import asyncpg
import structlog
from activity_schemas import ActivityEvent

from activity_streams.errors import ReferenceDataError
from activity_streams.preferences import (
    DEFAULT_PREFERENCE,
    FilterMode,
    Preference,
)

__all__ = [
    "INVALIDATING_PREFIXES",
    "MAX_CACHED_RESOURCES",
    "ChainNode",
    "NodeWatchers",
    "ReferenceSnapshot",
    "ReferenceStore",
    "TenantKey",
]

log = structlog.get_logger(__name__)

TenantKey = tuple[UUID, UUID]
"""A (tenant id, resource or principal id) pair."""

MAX_TREE_DEPTH = 64
"""Deepest ancestor chain followed; it also stops a cycle in bad reference data."""

MAX_CACHED_RESOURCES = 500_000
"""Cached resource rows before the cache starts over; about 150 MB of Python objects."""

_NOT_LOADED = object()
"""Marks a resource row absent from the cache, as opposed to one known not to exist (None)."""

MAX_CHAIN_ROUNDS = 3
"""Chain queries per batch at most: one, plus one more per ancestor forgotten meanwhile."""

WATCHING_ROLES = frozenset({"owner", "delegator"})
"""Roles whose holders watch the resource and everything below it."""

INVALIDATING_PREFIXES = ("resource.", "role_binding.", "subscription.", "preference.")
"""Action prefixes of the activities that change reference data and so invalidate the cache."""

_CHAINS = f"""
WITH RECURSIVE chain(tenant_id, start_id, id, parent_id, owner_principal_id, depth) AS (
    SELECT r.tenant_id, r.id, r.id, r.parent_id, r.owner_principal_id, 0
    FROM unnest($1::uuid[], $2::uuid[]) AS q(tenant_id, id)
    JOIN resources r ON r.tenant_id = q.tenant_id AND r.id = q.id
    UNION ALL
    SELECT c.tenant_id, c.start_id, p.id, p.parent_id, p.owner_principal_id, c.depth + 1
    FROM chain c
    JOIN resources p ON p.tenant_id = c.tenant_id AND p.id = c.parent_id
    WHERE c.depth < {MAX_TREE_DEPTH}
)
SELECT DISTINCT tenant_id, id, parent_id, owner_principal_id FROM chain
"""

_SUBSCRIPTIONS = """
SELECT s.tenant_id, s.resource_id, s.principal_id, s.scope
FROM unnest($1::uuid[], $2::uuid[]) AS q(tenant_id, id)
JOIN subscriptions s ON s.tenant_id = q.tenant_id AND s.resource_id = q.id
WHERE s.revoked_at IS NULL
"""

_ROLE_BINDINGS = """
SELECT b.tenant_id, b.resource_id, b.principal_id, b.role
FROM unnest($1::uuid[], $2::uuid[]) AS q(tenant_id, id)
JOIN role_bindings b ON b.tenant_id = q.tenant_id AND b.resource_id = q.id
WHERE b.revoked_at IS NULL
"""

_PREFERENCES = """
SELECT p.tenant_id, p.principal_id, p.filter_mode, p.custom_actions
FROM unnest($1::uuid[], $2::uuid[]) AS q(tenant_id, id)
JOIN notification_preferences p ON p.tenant_id = q.tenant_id AND p.principal_id = q.id
"""

_VERSIONS = """
SELECT v.tenant_id, v.version
FROM reference_versions v
WHERE v.tenant_id = ANY($1::uuid[])
"""

_TENANT_DEFAULTS = """
SELECT d.tenant_id, d.filter_mode, d.custom_actions
FROM tenant_notification_defaults d
WHERE d.tenant_id = ANY($1::uuid[])
"""


class ChainNode(NamedTuple):
    """A resource on an ancestor chain; depth 0 is the activity's own resource.

    A named tuple rather than a dataclass: chains are rebuilt for every batch.
    """

    resource_id: UUID
    owner_principal_id: UUID | None
    depth: int


@dataclass(frozen=True)
class NodeWatchers:
    """Watchers that one resource contributes to the activities on it or below it.

    Reasons are formatted once per load, not once per activity.
    """

    subscribers: tuple[tuple[UUID, str], ...]
    """Subscribers of any scope, with their reasons: they count on the resource itself."""
    descendants_subscribers: tuple[tuple[UUID, str], ...]
    """Subscribers with scope `descendants`: they count on every resource below too."""
    delegators: tuple[tuple[UUID, str], ...]
    """Holders of an `owner` or `delegator` role binding, with their reasons."""


@dataclass
class ReferenceSnapshot:
    """Reference data keyed for lookups without further queries; the store's cache is one too.

    `resources` holds each loaded resource's (parent, owner), or None when it
    does not exist in that tenant; `chains` memoizes the walks up that tree.
    Forgetting one resource row changes every chain through it, so a moved
    resource moves its descendants too. `versions` contains the reference-data
    version of each tenant when its cached data was checked last.
    """

    resources: dict[TenantKey, tuple[UUID | None, UUID | None] | None] = field(default_factory=dict)
    chains: dict[TenantKey, list[ChainNode]] = field(default_factory=dict)
    subscriptions: dict[TenantKey, list[tuple[UUID, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    role_bindings: dict[TenantKey, list[tuple[UUID, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    preferences: dict[TenantKey, Preference] = field(default_factory=dict)
    tenant_defaults: dict[UUID, Preference] = field(default_factory=dict)
    versions: dict[UUID, int] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    _bound: dict[TenantKey, frozenset[UUID]] = field(default_factory=dict, repr=False)
    _watching: dict[TenantKey, list[tuple[UUID, str]]] = field(default_factory=dict, repr=False)
    _node_watchers: dict[TenantKey, NodeWatchers] = field(default_factory=dict, repr=False)
    _candidates_loaded: set[TenantKey] = field(default_factory=set, repr=False)
    _loaded_nodes: set[TenantKey] = field(default_factory=set, repr=False)
    _loaded_principals: set[TenantKey] = field(default_factory=set, repr=False)
    _loaded_tenants: set[UUID] = field(default_factory=set, repr=False)
    _tenant_keys: dict[UUID, set[TenantKey]] = field(
        default_factory=lambda: defaultdict(set), repr=False
    )

    def watching_bindings(self, tenant_id: UUID, resource_id: UUID) -> list[tuple[UUID, str]]:
        """Return the `owner` and `delegator` bindings on the resource, computed once."""
        key = (tenant_id, resource_id)
        bindings = self._watching.get(key)
        if bindings is None:
            bindings = [
                (principal, role)
                for principal, role in self.role_bindings.get(key, ())
                if role in WATCHING_ROLES
            ]
            self._watching[key] = bindings
        return bindings

    def node_watchers(self, tenant_id: UUID, resource_id: UUID) -> NodeWatchers:
        """Return the resource's contribution to watchers, computed once."""
        key = (tenant_id, resource_id)
        watchers = self._node_watchers.get(key)
        if watchers is None:
            subscribers = tuple(
                (principal, f"subscription:{scope}:{resource_id}")
                for principal, scope in self.subscriptions.get(key, ())
            )
            watchers = NodeWatchers(
                subscribers=subscribers,
                descendants_subscribers=tuple(
                    (principal, reason)
                    for principal, reason in subscribers
                    if reason.startswith("subscription:descendants:")
                ),
                delegators=tuple(
                    (principal, f"role:{role}:{resource_id}")
                    for principal, role in self.watching_bindings(tenant_id, resource_id)
                ),
            )
            self._node_watchers[key] = watchers
        return watchers

    def bound_principals(self, tenant_id: UUID, resource_id: UUID) -> frozenset[UUID]:
        """Return the principals holding any role on the resource, computed once."""
        key = (tenant_id, resource_id)
        principals = self._bound.get(key)
        if principals is None:
            principals = frozenset(p for p, _ in self.role_bindings.get(key, ()))
            self._bound[key] = principals
        return principals

    def chain(self, tenant_id: UUID, resource_id: UUID) -> list[ChainNode]:
        """Return the resource and its ancestors, nearest first; unknown resources stand alone."""
        key = (tenant_id, resource_id)
        nodes = self.chains.get(key)
        if nodes is None:
            nodes = self._walk(tenant_id, resource_id)
            if nodes is None:
                nodes = []
            else:
                self.chains[key] = nodes
        return nodes if nodes else [ChainNode(resource_id, owner_principal_id=None, depth=0)]

    def _walk(self, tenant_id: UUID, resource_id: UUID) -> list[ChainNode] | None:
        """Walk up the cached rows; None when a resource on the way is not loaded yet."""
        nodes: list[ChainNode] = []
        current: UUID | None = resource_id
        while current is not None and len(nodes) <= MAX_TREE_DEPTH:
            row = self.resources.get((tenant_id, current), _NOT_LOADED)
            if row is _NOT_LOADED:
                return None
            if row is None:
                break
            nodes.append(ChainNode(current, row[1], len(nodes)))  # type: ignore[index]
            current = row[0]  # type: ignore[index]
        return nodes

    def is_loaded(self, tenant_id: UUID, resource_id: UUID) -> bool:
        """Return whether the resource and all its ancestors are cached."""
        if (tenant_id, resource_id) in self.chains:
            return True
        current: UUID | None = resource_id
        for _ in range(MAX_TREE_DEPTH + 1):
            if current is None:
                return True
            row = self.resources.get((tenant_id, current), _NOT_LOADED)
            if row is _NOT_LOADED:
                return False
            if row is None:
                return True
            current = row[0]  # type: ignore[index]
        return True

    def preference(self, tenant_id: UUID, principal_id: UUID) -> Preference:
        """Return the preference that applies to a principal: its own, the tenant's, the default."""
        own = self.preferences.get((tenant_id, principal_id))
        if own is not None:
            return own
        return self.tenant_defaults.get(tenant_id, DEFAULT_PREFERENCE)

    def forget_resource(self, tenant_id: UUID, resource_id: UUID) -> None:
        """Forget the resource's chain, every chain through it, and the bindings on it."""
        key = (tenant_id, resource_id)
        self.resources.pop(key, None)
        self.chains.clear()
        self._forget_node(key)

    def forget_access(self, tenant_id: UUID) -> None:
        """Forget every subscription and role binding of a tenant."""
        for key in self._tenant_keys.get(tenant_id, ()):
            if key in self._loaded_nodes:
                self._forget_node(key)

    def forget_preferences(self, tenant_id: UUID) -> None:
        """Forget every preference of a tenant, and its default."""
        for key in self._tenant_keys.get(tenant_id, ()):
            self._loaded_principals.discard(key)
            self.preferences.pop(key, None)
            self._candidates_loaded.discard(key)
        self._loaded_tenants.discard(tenant_id)
        self.tenant_defaults.pop(tenant_id, None)

    def forget_tenants(self, tenants: Iterable[UUID]) -> None:
        """Forget everything cached of `tenants`: resource rows, chains, access, preferences."""
        for tenant_id in tenants:
            for key in self._tenant_keys.pop(tenant_id, ()):
                self.resources.pop(key, None)
                self.chains.pop(key, None)
                self._forget_node(key)
                self._loaded_principals.discard(key)
                self.preferences.pop(key, None)
            self._loaded_tenants.discard(tenant_id)
            self.tenant_defaults.pop(tenant_id, None)

    def track(self, keys: Iterable[TenantKey]) -> None:
        """Index cached keys by tenant, so that forgetting a tenant touches only its own keys.

        Every key of `resources`, `_loaded_nodes` and `_loaded_principals` is
        indexed when loaded; `chains` and the derived caches use the same keys.
        """
        index = self._tenant_keys
        for key in keys:
            index[key[0]].add(key)

    def _forget_node(self, key: TenantKey) -> None:
        self._loaded_nodes.discard(key)
        self.subscriptions.pop(key, None)
        self.role_bindings.pop(key, None)
        self._bound.pop(key, None)
        self._watching.pop(key, None)
        self._node_watchers.pop(key, None)
        self._candidates_loaded.discard(key)


def _columns(keys: Iterable[TenantKey]) -> tuple[list[UUID], list[UUID]]:
    tenants: list[UUID] = []
    ids: list[UUID] = []
    for tenant_id, item_id in keys:
        tenants.append(tenant_id)
        ids.append(item_id)
    return tenants, ids


def _preference(row: asyncpg.Record) -> Preference:
    return Preference(FilterMode(row["filter_mode"]), tuple(row["custom_actions"]))


class ReferenceStore:
    """Reads reference data for batches of activities through an asyncpg pool.

    With `cache_ttl_s` above zero, data loaded for one batch serves the next
    ones until its tenant's version in `reference_versions` moves, `invalidate()`
    forgets it, or it is `cache_ttl_s` seconds old.
    """

    def __init__(self, pool: asyncpg.Pool, cache_ttl_s: float = 0.0) -> None:
        self._pool = pool
        self._cache_ttl_s = cache_ttl_s
        self._cache = ReferenceSnapshot()
        self.queries = 0
        """Round trips to PostgreSQL so far; the benchmark reports it."""

    def invalidate(self, events: Iterable[ActivityEvent]) -> int:
        """Forget the cached data that `events` announce a change of; return how many did."""
        invalidating = 0
        for event in events:
            action = event.action
            if not action.startswith(INVALIDATING_PREFIXES):
                continue
            invalidating += 1
            if action.startswith("resource."):
                self._cache.forget_resource(event.tenant_id, event.resource.id)
            elif action.startswith(("role_binding.", "subscription.")):
                self._cache.forget_access(event.tenant_id)
            else:
                self._cache.forget_preferences(event.tenant_id)
        return invalidating

    def clear(self) -> None:
        """Forget everything cached."""
        self._cache = ReferenceSnapshot()

    async def load(
        self, resources: set[TenantKey], extra_resources: set[TenantKey] | None = None
    ) -> ReferenceSnapshot:
        """Load chains of `resources`, and bindings also on `extra_resources` (chat channels)."""
        snapshot = self._snapshot()
        extra = extra_resources or set()

        if self._cache_ttl_s > 0:
            await self._forget_changed_tenants(snapshot, {t for t, _ in resources | extra})

        missing_chains = {key for key in resources if not snapshot.is_loaded(*key)}
        for _ in range(MAX_CHAIN_ROUNDS):
            if not missing_chains:
                break
            await self._load_chains(snapshot, missing_chains)
            missing_chains = {key for key in missing_chains if not snapshot.is_loaded(*key)}

        batch_nodes = {
            (tenant_id, node.resource_id)
            for tenant_id, resource_id in resources
            for node in snapshot.chain(tenant_id, resource_id)
        }
        batch_nodes |= extra
        missing_nodes = batch_nodes - snapshot._loaded_nodes
        if missing_nodes:
            await self._load_access(snapshot, missing_nodes)

        fresh_nodes = batch_nodes - snapshot._candidates_loaded
        fresh_resources = {key for key in resources if key in fresh_nodes}
        candidates = self._candidates(snapshot, fresh_resources, fresh_nodes, extra)
        missing_principals = candidates - snapshot._loaded_principals
        missing_tenants = {tenant_id for tenant_id, _ in resources} - snapshot._loaded_tenants
        if missing_principals or missing_tenants:
            await self._load_preferences(snapshot, missing_principals, missing_tenants)
        snapshot._candidates_loaded |= fresh_nodes
        return snapshot

    def _snapshot(self) -> ReferenceSnapshot:
        if self._cache_ttl_s <= 0:
            return ReferenceSnapshot()
        age_s = time.monotonic() - self._cache.created_at
        if age_s > self._cache_ttl_s or len(self._cache.resources) > MAX_CACHED_RESOURCES:
            log.debug("reference_cache_cleared", age_s=round(age_s, 1))
            self._cache = ReferenceSnapshot()
        return self._cache

    async def _forget_changed_tenants(
        self, snapshot: ReferenceSnapshot, tenants: set[UUID]
    ) -> None:
        """Read the tenants' versions, forget those that moved, and remember the new ones."""
        if not tenants:
            return
        rows = await self._query(_VERSIONS, list(tenants))
        current = dict.fromkeys(tenants, 0)
        current.update((row["tenant_id"], row["version"]) for row in rows)

        changed = {
            tenant_id
            for tenant_id, version in current.items()
            if snapshot.versions.get(tenant_id, version) != version
        }
        snapshot.forget_tenants(changed)
        snapshot.versions.update(current)
        if changed:
            log.debug("reference_cache_tenants_forgotten", tenants=len(changed))

    async def _load_chains(self, snapshot: ReferenceSnapshot, keys: set[TenantKey]) -> None:
        rows = await self._fetch(_CHAINS, keys)
        for key in keys:
            snapshot.resources[key] = None
        loaded: list[TenantKey] = []
        for row in rows:
            key = (row["tenant_id"], row["id"])
            snapshot.resources[key] = (row["parent_id"], row["owner_principal_id"])
            loaded.append(key)
        snapshot.track(keys)
        snapshot.track(loaded)

    async def _load_access(self, snapshot: ReferenceSnapshot, keys: set[TenantKey]) -> None:
        subscription_rows, binding_rows = await asyncio.gather(
            self._fetch(_SUBSCRIPTIONS, keys), self._fetch(_ROLE_BINDINGS, keys)
        )
        for key in keys:
            snapshot._forget_node(key)
            snapshot._loaded_nodes.add(key)
        snapshot.track(keys)
        for row in subscription_rows:
            snapshot.subscriptions[(row["tenant_id"], row["resource_id"])].append(
                (row["principal_id"], row["scope"])
            )
        for row in binding_rows:
            snapshot.role_bindings[(row["tenant_id"], row["resource_id"])].append(
                (row["principal_id"], row["role"])
            )

    async def _load_preferences(
        self, snapshot: ReferenceSnapshot, principals: set[TenantKey], tenants: set[UUID]
    ) -> None:
        preference_rows, default_rows = await asyncio.gather(
            self._fetch(_PREFERENCES, principals), self._fetch_defaults(tenants)
        )
        snapshot._loaded_principals |= principals
        snapshot.track(principals)
        snapshot._loaded_tenants |= tenants
        for row in preference_rows:
            snapshot.preferences[(row["tenant_id"], row["principal_id"])] = _preference(row)
        for row in default_rows:
            snapshot.tenant_defaults[row["tenant_id"]] = _preference(row)

    async def _fetch(self, query: str, keys: set[TenantKey]) -> list[asyncpg.Record]:
        if not keys:
            return []
        return await self._query(query, *_columns(keys))

    async def _fetch_defaults(self, tenants: set[UUID]) -> list[asyncpg.Record]:
        if not tenants:
            return []
        return await self._query(_TENANT_DEFAULTS, list(tenants))

    async def _query(self, query: str, *arguments: object) -> list[asyncpg.Record]:
        self.queries += 1
        try:
            async with self._pool.acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(query, *arguments)
                return rows
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise ReferenceDataError(
                f"reading reference data failed ({type(exc).__name__}: {exc}); check that "
                "PostgreSQL at ACTIVITY_DATABASE_URL is up and migrated (`activity migrate`)"
            ) from exc

    @staticmethod
    def _candidates(
        snapshot: ReferenceSnapshot,
        resources: set[TenantKey],
        nodes: set[TenantKey],
        chat_channels: set[TenantKey],
    ) -> set[TenantKey]:
        """Return every principal that could watch an activity of the batch."""
        candidates: set[TenantKey] = set()
        for key in nodes:
            tenant_id = key[0]
            candidates.update(
                (tenant_id, principal) for principal, _ in snapshot.subscriptions.get(key, ())
            )
            if key in chat_channels:
                candidates.update(
                    (tenant_id, principal) for principal, _ in snapshot.role_bindings.get(key, ())
                )
            else:
                candidates.update(
                    (tenant_id, principal)
                    for principal, _ in snapshot.watching_bindings(tenant_id, key[1])
                )
        for tenant_id, resource_id in resources:
            owner = snapshot.chain(tenant_id, resource_id)[0].owner_principal_id
            if owner is not None:
                candidates.add((tenant_id, owner))
        return candidates
