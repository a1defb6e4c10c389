"""Property test: the agent's resolution equals a plain-Python model of the rules.

Hypothesis generates resource trees, role bindings (some revoked),
subscriptions, preferences, a tenant default and an activity; each example
is written to the real PostgreSQL in a tenant of its own, beside a mirror
tenant that reuses the same resource ids with other principals. The agent's
path (`ReferenceStore` + `resolve`) must equal the model, never reach into the
mirror tenant, and never notify the actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from uuid import UUID, uuid4

import asyncpg
import pytest
from activity_producer.dsn import for_libpq
from activity_schemas import Visibility
from activity_streams.reference import ReferenceStore
from activity_streams.resolution import BatchResolver
from activity_streams.watchers import Rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.enrichment.conftest import World

PRINCIPALS = 5
ACTIONS = ("resource.updated", "run.completed", "security.alert", "message.posted")
PATTERNS = ("resource.*", "run.*", "security.*", "message.*", "Resource.*")
MODES = ("muted", "all", "mutations", "custom")
ROLES = ("owner", "delegator", "viewer", "editor")
MUTATIONS = (
    "resource.created",
    "resource.updated",
    "resource.deleted",
    "transfer.*",
    "promotion.*",
)
RULES = Rules(mutation_actions=MUTATIONS, critical_actions=("security.*",))


@dataclass(frozen=True)
class Example:
    """One generated world and activity; principals and resources are indexes."""

    parents: tuple[int | None, ...]
    owners: tuple[int | None, ...]
    bindings: tuple[tuple[int, int, str, bool], ...]
    subscriptions: tuple[tuple[int, int, str, bool], ...]
    preferences: dict[int, tuple[str, tuple[str, ...]]]
    tenant_default: tuple[str, tuple[str, ...]] | None
    actor: int
    resource: int
    action: str
    visibility: Visibility
    target: int | None


@st.composite
def examples(draw: st.DrawFn) -> Example:
    size = draw(st.integers(1, 5))
    parents = tuple(
        None if index == 0 else draw(st.none() | st.integers(0, index - 1)) for index in range(size)
    )
    principal = st.integers(0, PRINCIPALS - 1)
    resource = st.integers(0, size - 1)
    preference = st.tuples(st.sampled_from(MODES), st.lists(st.sampled_from(PATTERNS)).map(tuple))
    return Example(
        parents=parents,
        owners=tuple(draw(st.none() | principal) for _ in range(size)),
        bindings=tuple(
            draw(
                st.lists(
                    st.tuples(principal, resource, st.sampled_from(ROLES), st.booleans()),
                    max_size=6,
                )
            )
        ),
        subscriptions=tuple(
            draw(
                st.lists(
                    st.tuples(
                        principal,
                        resource,
                        st.sampled_from(("resource", "descendants")),
                        st.booleans(),
                    ),
                    max_size=6,
                    unique_by=lambda s: (s[0], s[1], s[2]),
                )
            )
        ),
        preferences=draw(st.dictionaries(principal, preference, max_size=PRINCIPALS)),
        tenant_default=draw(st.none() | preference),
        actor=draw(principal),
        resource=draw(st.integers(-1, size - 1)),
        action=draw(st.sampled_from(ACTIONS)),
        visibility=draw(st.sampled_from(list(Visibility))),
        target=draw(st.none() | principal),
    )


def model(example: Example) -> set[int]:
    """The rules, written plainly: the principals (indexes) that must be notified."""
    active_bindings = [(p, r, role) for p, r, role, revoked in example.bindings if not revoked]
    active_subscriptions = [(p, r, s) for p, r, s, revoked in example.subscriptions if not revoked]
    chain: list[int] = []
    node: int | None = example.resource if example.resource >= 0 else None
    while node is not None:
        chain.append(node)
        node = example.parents[node]

    watchers: set[int] = set()
    for depth, resource in enumerate(chain):
        for p, r, scope in active_subscriptions:
            if r == resource and (depth == 0 or scope == "descendants"):
                watchers.add(p)
    if chain and example.owners[chain[0]] is not None:
        watchers.add(example.owners[chain[0]])  # type: ignore[arg-type]
    for p, r, role in active_bindings:
        if r in chain and role in ("owner", "delegator"):
            watchers.add(p)
    if example.action.startswith("message.") and chain:
        watchers.update(p for p, r, _ in active_bindings if r == chain[0])
    watchers.discard(example.actor)
    if example.target is not None:
        watchers.discard(example.target)

    def can_access(principal: int, nodes: list[int]) -> bool:
        if nodes and example.owners[nodes[0]] == principal:
            return True
        return any(p == principal and r in nodes for p, r, _ in active_bindings)

    if example.visibility == Visibility.PRIVATE:
        watchers = set()
    elif example.visibility == Visibility.RESOURCE:
        watchers = {p for p in watchers if can_access(p, chain)}
    elif example.visibility == Visibility.SCOPE:
        scope = chain[1:] or chain
        watchers = {p for p in watchers if can_access(p, scope)}

    def wants(principal: int) -> bool:
        if fnmatchcase(example.action, "security.*"):
            return True
        mode, patterns = example.preferences.get(
            principal, example.tenant_default or ("mutations", ())
        )
        if mode == "muted":
            return False
        if mode == "all":
            return True
        chosen = MUTATIONS if mode == "mutations" else patterns
        return any(fnmatchcase(example.action, pattern) for pattern in chosen)

    notified = {p for p in watchers if wants(p)}
    if example.target is not None and example.target != example.actor:
        notified.add(example.target)
    return notified


async def _write(world: World, example: Example, ids: list[UUID], people: list[UUID]) -> None:
    kind = "channel" if example.action.startswith("message.") else "document"
    for index, parent in enumerate(example.parents):
        owner = example.owners[index]
        await world.pool.execute(
            "INSERT INTO resources (tenant_id, id, type, parent_id, owner_principal_id)"
            " VALUES ($1, $2, $3, $4, $5)",
            world.tenant,
            ids[index],
            kind,
            None if parent is None else ids[parent],
            None if owner is None else people[owner],
        )
    await world.pool.executemany(
        "INSERT INTO role_bindings (id, tenant_id, principal_id, resource_id, role, revoked_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
        [
            (uuid4(), world.tenant, people[p], ids[r], role, revoked)
            for p, r, role, revoked in example.bindings
        ],
    )
    await world.pool.executemany(
        "INSERT INTO subscriptions (id, tenant_id, principal_id, resource_id, scope, revoked_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
        [
            (uuid4(), world.tenant, people[p], ids[r], scope, revoked)
            for p, r, scope, revoked in example.subscriptions
        ],
    )
    for principal, (mode, patterns) in example.preferences.items():
        await world.prefer(people[principal], mode, patterns)
    if example.tenant_default is not None:
        await world.default(*example.tenant_default)


@dataclass
class Outcome:
    notified: set[int]
    mirror_notified: bool
    actor_notified: bool


class Harness:
    """Runs each example on a loop of its own, so that hypothesis can drive a sync test."""

    def __init__(self, database_url: str) -> None:
        self.runner = asyncio.Runner()
        self.pool: asyncpg.Pool = self.runner.run(self._connect(database_url))

    @staticmethod
    async def _connect(database_url: str) -> asyncpg.Pool:
        return await asyncpg.create_pool(for_libpq(database_url), min_size=1, max_size=4)

    def close(self) -> None:
        self.runner.run(self.pool.close())
        self.runner.close()

    def resolve(self, example: Example) -> Outcome:
        return self.runner.run(self._resolve(example))

    async def _resolve(self, example: Example) -> Outcome:
        world, mirror = World(self.pool), World(self.pool)
        ids = [uuid4() for _ in example.parents]
        people = [uuid4() for _ in range(PRINCIPALS)]
        strangers = [uuid4() for _ in range(PRINCIPALS)]
        await _write(world, example, ids, people)
        await _write(mirror, example, ids, strangers)
        resource = ids[example.resource] if example.resource >= 0 else uuid4()
        event = world.event(
            people[example.actor],
            resource,
            example.action,
            example.visibility,
            None if example.target is None else people[example.target],
            resource_type="channel" if example.action.startswith("message.") else "document",
        )

        (delivery,) = await BatchResolver(ReferenceStore(self.pool), RULES).resolve([event])

        notified = {r.principal_id for r in delivery.recipients}  # type: ignore[union-attr]
        return Outcome(
            notified={people.index(p) for p in notified if p in people},
            mirror_notified=bool(notified & set(strangers)),
            actor_notified=people[example.actor] in notified,
        )


@pytest.fixture(scope="module")
def harness(database_url: str) -> Iterator[Harness]:
    harness = Harness(database_url)
    yield harness
    harness.close()


PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(example=examples())
def test_recipients_equal_the_reference_model(harness: Harness, example: Example) -> None:
    outcome = harness.resolve(example)

    assert outcome.notified == model(example)


@PROPERTY_SETTINGS
@given(example=examples())
def test_no_principal_of_another_tenant_is_ever_notified(
    harness: Harness, example: Example
) -> None:
    outcome = harness.resolve(example)

    assert not outcome.mirror_notified


@PROPERTY_SETTINGS
@given(example=examples())
def test_actor_is_never_notified(harness: Harness, example: Example) -> None:
    outcome = harness.resolve(example)

    assert not outcome.actor_notified
