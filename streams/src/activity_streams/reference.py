"""Set-based loading of the reference data that a batch of activities needs.

A whole batch costs three round trips, whatever its size: one recursive CTE
for every ancestor chain, then subscriptions and role bindings on every
resource of those chains (two queries, run concurrently), then the
preferences of every candidate watcher. Every query is keyed by
(tenant, resource) or (tenant, principal), so no lookup crosses tenants.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from activity_streams.preferences import FilterMode, Preference

__all__ = ["ChainNode", "ReferenceSnapshot", "ReferenceStore", "TenantKey"]

TenantKey = tuple[UUID, UUID]
"""A (tenant id, resource or principal id) pair."""

MAX_TREE_DEPTH = 64
"""Deepest ancestor chain followed; it also stops a cycle in bad reference data."""

WATCHING_ROLES = frozenset({"owner", "delegator"})
"""Roles whose holders watch the resource and everything below it."""

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
SELECT tenant_id, start_id, id, owner_principal_id, depth FROM chain
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


@dataclass(frozen=True)
class ChainNode:
    """A resource on an ancestor chain; depth 0 is the activity's own resource."""

    resource_id: UUID
    owner_principal_id: UUID | None
    depth: int


@dataclass
class ReferenceSnapshot:
    """The reference data of one batch, keyed for lookups without further queries."""

    chains: dict[TenantKey, list[ChainNode]] = field(default_factory=dict)
    subscriptions: dict[TenantKey, list[tuple[UUID, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    role_bindings: dict[TenantKey, list[tuple[UUID, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    preferences: dict[TenantKey, Preference] = field(default_factory=dict)
    _bound: dict[TenantKey, frozenset[UUID]] = field(default_factory=dict, repr=False)
    _watching: dict[TenantKey, list[tuple[UUID, str]]] = field(default_factory=dict, repr=False)

    def watching_bindings(self, tenant_id: UUID, resource_id: UUID) -> list[tuple[UUID, str]]:
        """Return the `owner` and `delegator` bindings on the resource, computed once per batch."""
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

    def bound_principals(self, tenant_id: UUID, resource_id: UUID) -> frozenset[UUID]:
        """Return the principals holding any role on the resource, computed once per batch."""
        key = (tenant_id, resource_id)
        principals = self._bound.get(key)
        if principals is None:
            principals = frozenset(p for p, _ in self.role_bindings.get(key, ()))
            self._bound[key] = principals
        return principals

    def chain(self, tenant_id: UUID, resource_id: UUID) -> list[ChainNode]:
        """Return the resource and its ancestors, nearest first; unknown resources stand alone."""
        return self.chains.get(
            (tenant_id, resource_id), [ChainNode(resource_id, owner_principal_id=None, depth=0)]
        )


def _columns(keys: Iterable[TenantKey]) -> tuple[list[UUID], list[UUID]]:
    tenants: list[UUID] = []
    ids: list[UUID] = []
    for tenant_id, item_id in keys:
        tenants.append(tenant_id)
        ids.append(item_id)
    return tenants, ids


class ReferenceStore:
    """Reads reference data for batches of activities through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(
        self, resources: set[TenantKey], extra_resources: set[TenantKey] | None = None
    ) -> ReferenceSnapshot:
        """Load chains of `resources`, and bindings also on `extra_resources` (chat channels)."""
        snapshot = ReferenceSnapshot()

        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_CHAINS, *_columns(resources))
        chains: dict[TenantKey, list[ChainNode]] = defaultdict(list)
        for row in rows:
            chains[(row["tenant_id"], row["start_id"])].append(
                ChainNode(row["id"], row["owner_principal_id"], row["depth"])
            )
        for nodes in chains.values():
            nodes.sort(key=lambda node: node.depth)
        snapshot.chains = dict(chains)

        nodes_keys = {
            (tenant_id, node.resource_id)
            for (tenant_id, _), nodes in snapshot.chains.items()
            for node in nodes
        }
        nodes_keys |= resources
        binding_keys = nodes_keys | (extra_resources or set())
        subscription_rows, binding_rows = await asyncio.gather(
            self._fetch(_SUBSCRIPTIONS, nodes_keys), self._fetch(_ROLE_BINDINGS, binding_keys)
        )
        for row in subscription_rows:
            snapshot.subscriptions[(row["tenant_id"], row["resource_id"])].append(
                (row["principal_id"], row["scope"])
            )
        for row in binding_rows:
            snapshot.role_bindings[(row["tenant_id"], row["resource_id"])].append(
                (row["principal_id"], row["role"])
            )

        candidates = self._candidates(snapshot, extra_resources or set())
        for row in await self._fetch(_PREFERENCES, candidates):
            snapshot.preferences[(row["tenant_id"], row["principal_id"])] = Preference(
                FilterMode(row["filter_mode"]), tuple(row["custom_actions"])
            )
        return snapshot

    async def _fetch(self, query: str, keys: set[TenantKey]) -> list[asyncpg.Record]:
        if not keys:
            return []
        async with self._pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *_columns(keys))
            return rows

    @staticmethod
    def _candidates(snapshot: ReferenceSnapshot, chat_channels: set[TenantKey]) -> set[TenantKey]:
        """Return every principal that could watch an activity of the batch."""
        candidates: set[TenantKey] = set()
        for (tenant_id, _), subscribers in snapshot.subscriptions.items():
            candidates.update((tenant_id, principal) for principal, _ in subscribers)
        for key, bindings in snapshot.role_bindings.items():
            tenant_id = key[0]
            is_chat = key in chat_channels
            candidates.update(
                (tenant_id, principal)
                for principal, role in bindings
                if is_chat or role in WATCHING_ROLES
            )
        for (tenant_id, _), nodes in snapshot.chains.items():
            candidates.update(
                (tenant_id, node.owner_principal_id)
                for node in nodes
                if node.depth == 0 and node.owner_principal_id is not None
            )
        return candidates
