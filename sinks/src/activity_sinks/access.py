"""The access re-check at delivery: drops recipients who lost access after enrichment.

Between enrichment and delivery a role binding may be revoked or a resource
may change owner. Right before publishing, one query per batch reads the
ancestor chains of the batch's resources with their owners. A second query
reads the active role bindings that the batch's recipients have on those
resources. A recipient is kept only while it still has access as the
activity's visibility demands:

- `resource`: owner of the resource, or an active role binding on it or an ancestor;
- `scope`: the same, on the resource's parent scope;
- `tenant`: no access is needed; `private`: only the target principal.

The target principal (reason `target`) is always kept: the action is about it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg
from activity_schemas import Delivery, Recipient, Visibility

__all__ = ["TARGET_REASON", "AccessChecker", "AccessSnapshot"]

TARGET_REASON = "target"
"""Reason the enrichment agent gives the principal an action is about."""

MAX_TREE_DEPTH = 64
"""Deepest ancestor chain followed; it also stops a cycle in bad reference data."""

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

_BINDINGS = """
SELECT b.tenant_id, b.resource_id, array_agg(b.principal_id) AS bound
FROM unnest($1::uuid[], $2::uuid[]) AS q(tenant_id, id)
JOIN role_bindings b ON b.tenant_id = q.tenant_id AND b.resource_id = q.id
WHERE b.revoked_at IS NULL AND b.principal_id = ANY($3::uuid[])
GROUP BY b.tenant_id, b.resource_id
"""

_Key = tuple[UUID, UUID]


@dataclass(frozen=True)
class _Node:
    depth: int
    owner: UUID | None
    bound: frozenset[UUID]


@dataclass
class AccessSnapshot:
    """Chains with owners and the recipients' active bindings, for one batch."""

    chains: dict[_Key, list[_Node]] = field(default_factory=dict)

    def has_access(self, tenant_id: UUID, resource_id: UUID, principal: UUID, scope: bool) -> bool:
        """Whether `principal` may see the resource (`scope`: its parent scope)."""
        nodes = self.chains.get((tenant_id, resource_id), [])
        if scope and len(nodes) > 1:
            nodes = nodes[1:]
        if nodes and nodes[0].owner == principal:
            return True
        return any(principal in node.bound for node in nodes)

    def allowed(self, delivery: Delivery) -> tuple[Recipient, ...]:
        """Return the recipients of `delivery` that still may hear of it."""
        event = delivery.event
        kept = []
        for recipient in delivery.recipients:
            if TARGET_REASON in recipient.reasons:
                kept.append(recipient)
                continue
            match event.visibility:
                case Visibility.TENANT:
                    keep = True
                case Visibility.PRIVATE:
                    keep = False
                case Visibility.RESOURCE | Visibility.SCOPE:
                    keep = self.has_access(
                        event.tenant_id,
                        event.resource.id,
                        recipient.principal_id,
                        scope=event.visibility == Visibility.SCOPE,
                    )
            if keep:
                kept.append(recipient)
        return tuple(kept)


class AccessChecker:
    """Loads access snapshots through an asyncpg pool: one query per batch."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def load(self, deliveries: Sequence[Delivery]) -> AccessSnapshot:
        """Return the access snapshot of every checked recipient in `deliveries`."""
        resources: set[_Key] = set()
        principals: set[UUID] = set()
        for delivery in deliveries:
            event = delivery.event
            checked = [
                r.principal_id for r in delivery.recipients if TARGET_REASON not in r.reasons
            ]
            if checked and event.visibility in (Visibility.RESOURCE, Visibility.SCOPE):
                resources.add((event.tenant_id, event.resource.id))
                principals.update(checked)
        snapshot = AccessSnapshot()
        if not resources:
            return snapshot

        async with self._pool.acquire() as conn:
            chain_rows = await conn.fetch(
                _CHAINS, [tenant for tenant, _ in resources], [res for _, res in resources]
            )
            nodes = {(row["tenant_id"], row["id"]) for row in chain_rows} | resources
            binding_rows = await conn.fetch(
                _BINDINGS,
                [tenant for tenant, _ in nodes],
                [node for _, node in nodes],
                list(principals),
            )

        bound = {
            (row["tenant_id"], row["resource_id"]): frozenset(row["bound"]) for row in binding_rows
        }
        chains: dict[_Key, list[_Node]] = defaultdict(list)
        for row in chain_rows:
            tenant_id = row["tenant_id"]
            chains[(tenant_id, row["start_id"])].append(
                _Node(
                    row["depth"],
                    row["owner_principal_id"],
                    bound.get((tenant_id, row["id"]), frozenset()),
                )
            )
        for key in resources - chains.keys():
            chains[key] = [_Node(0, None, bound.get(key, frozenset()))]
        for nodes_of_chain in chains.values():
            nodes_of_chain.sort(key=lambda node: node.depth)
        snapshot.chains = dict(chains)
        return snapshot
