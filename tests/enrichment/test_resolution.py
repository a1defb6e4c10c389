"""The batch resolver against real PostgreSQL: visibility, preferences, targets, tenants, cache.

Each test builds its own tenant with `World`, resolves activities with
`BatchResolver` exactly as the agent does, and checks the recipients.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg
from activity_schemas import ActivityEvent, Delivery, Visibility
from activity_streams.reference import ReferenceStore
from activity_streams.resolution import BatchResolver, Unresolvable, store_inbox_notifications
from activity_streams.watchers import Rules

from tests.enrichment.conftest import World

RULES = Rules(critical_actions=("security.*",))


async def _deliver(pool: asyncpg.Pool, *events: ActivityEvent) -> list[Delivery]:
    outcomes = await BatchResolver(ReferenceStore(pool), RULES).resolve(events)
    deliveries = [o for o in outcomes if isinstance(o, Delivery)]
    assert len(deliveries) == len(events), outcomes
    return deliveries


def _recipients(delivery: Delivery) -> dict[UUID, tuple[str, ...]]:
    return {r.principal_id: r.reasons for r in delivery.recipients}


class Tree:
    """root -> folder -> document in one tenant, all owned by `owner`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.owner, self.actor = uuid4(), uuid4()

    async def build(self) -> Tree:
        self.root = await self.world.resource(owner=self.owner, kind="workspace")
        self.folder = await self.world.resource(self.root, self.owner, "folder")
        self.document = await self.world.resource(self.folder, self.owner)
        return self


async def test_resource_visibility_drops_subscriber_without_access(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    member, stranger = uuid4(), uuid4()
    await world.grant(member, tree.root, "viewer")
    for principal in (member, stranger):
        await world.subscribe(principal, tree.folder, "descendants")

    (delivery,) = await _deliver(pool, world.event(tree.actor, tree.document))

    assert _recipients(delivery) == {
        tree.owner: ("owner",),
        member: (f"subscription:descendants:{tree.folder}",),
    }


async def test_scope_visibility_needs_access_to_the_parent(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    on_document, on_folder = uuid4(), uuid4()
    await world.grant(on_document, tree.document, "viewer")
    await world.grant(on_folder, tree.folder, "viewer")
    for principal in (on_document, on_folder):
        await world.subscribe(principal, tree.document, "resource")

    (delivery,) = await _deliver(
        pool, world.event(tree.actor, tree.document, visibility=Visibility.SCOPE)
    )

    assert set(_recipients(delivery)) == {tree.owner, on_folder}


async def test_tenant_visibility_reaches_subscriber_without_access(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    stranger = uuid4()
    await world.subscribe(stranger, tree.document, "resource")

    (delivery,) = await _deliver(
        pool, world.event(tree.actor, tree.document, visibility=Visibility.TENANT)
    )

    assert set(_recipients(delivery)) == {tree.owner, stranger}


async def test_private_activity_reaches_only_the_target_and_no_shared_channel(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    target = uuid4()

    (delivery,) = await _deliver(
        pool,
        world.event(tree.actor, tree.document, visibility=Visibility.PRIVATE, target=target),
    )

    assert _recipients(delivery) == {target: ("target",)}
    assert delivery.shared_channels == ()


async def test_each_preference_mode_filters_as_documented(world: World, pool: asyncpg.Pool) -> None:
    tree = await Tree(world).build()
    muted, everything, mutations, custom, fallback = (uuid4() for _ in range(5))
    for principal in (muted, everything, mutations, custom, fallback):
        await world.grant(principal, tree.root, "delegator")
    await world.prefer(muted, "muted")
    await world.prefer(everything, "all")
    await world.prefer(mutations, "mutations")
    await world.prefer(custom, "custom", ("run.*",))
    await world.prefer(tree.owner, "muted")

    updated, completed = await _deliver(
        pool,
        world.event(tree.actor, tree.document, "resource.updated"),
        world.event(tree.actor, tree.document, "run.completed"),
    )

    assert set(_recipients(updated)) == {everything, mutations, fallback}
    assert set(_recipients(completed)) == {everything, custom}


async def test_tenant_default_applies_unless_the_principal_has_its_own(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    follower, own_choice = uuid4(), uuid4()
    for principal in (follower, own_choice):
        await world.grant(principal, tree.root, "delegator")
    await world.default("muted")
    await world.prefer(own_choice, "all")

    (delivery,) = await _deliver(pool, world.event(tree.actor, tree.document))

    assert set(_recipients(delivery)) == {own_choice}


async def test_critical_action_reaches_muted_watcher_with_critical_reason(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    await world.prefer(tree.owner, "muted")

    (delivery,) = await _deliver(pool, world.event(tree.actor, tree.document, "security.alert"))

    assert _recipients(delivery) == {tree.owner: ("owner", "critical")}


async def test_chat_message_reaches_channel_members_and_the_chat_channel(
    world: World, pool: asyncpg.Pool
) -> None:
    channel = await world.resource(kind="channel")
    message = await world.resource(channel, kind="message")
    member = uuid4()
    sender = uuid4()
    await world.grant(member, channel, "member")
    await world.grant(sender, channel, "member")
    await world.prefer(member, "all")

    (delivery,) = await _deliver(
        pool,
        world.event(
            sender,
            message,
            "message.posted",
            payload={"channel_id": str(channel)},
            resource_type="message",
        ),
    )

    assert _recipients(delivery) == {member: (f"chat_member:{channel}",)}
    assert f"chat:{world.tenant}.{channel}" in delivery.shared_channels


async def test_invite_reaches_invitee_from_payload_and_stores_one_inbox_row(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    invitee = uuid4()
    event = world.event(
        tree.actor, tree.folder, "invite.created", payload={"invitee_principal_id": str(invitee)}
    )

    (delivery,) = await _deliver(pool, event)
    await store_inbox_notifications(pool, [delivery])
    await store_inbox_notifications(pool, [delivery])
    rows = await pool.fetch(
        "SELECT principal_id, action FROM inbox_notifications WHERE event_id = $1",
        event.event_id,
    )

    assert _recipients(delivery)[invitee] == ("target",)
    assert [(row["principal_id"], row["action"]) for row in rows] == [(invitee, "invite.created")]


async def test_resource_of_another_tenant_resolves_to_nothing(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    watcher = uuid4()
    await world.subscribe(watcher, tree.document, "resource")
    await world.grant(watcher, tree.document, "delegator")
    intruder = World(pool)

    (delivery,) = await _deliver(
        pool, intruder.event(tree.actor, tree.document, visibility=Visibility.TENANT)
    )

    assert delivery.recipients == ()


async def test_revoked_binding_stops_notifications_in_next_batch(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    delegator = uuid4()
    binding = await world.grant(delegator, tree.folder, "delegator")
    resolver = BatchResolver(ReferenceStore(pool, cache_ttl_s=3600.0), RULES)
    (before,) = await resolver.resolve([world.event(tree.actor, tree.document)])

    await world.revoke(binding)
    (cached,) = await resolver.resolve([world.event(tree.actor, tree.document)])
    revoked, after = await resolver.resolve(
        [
            world.event(tree.owner, binding, "role_binding.revoked", resource_type="role_binding"),
            world.event(tree.actor, tree.document),
        ]
    )

    assert isinstance(before, Delivery) and isinstance(cached, Delivery)
    assert isinstance(after, Delivery) and isinstance(revoked, Delivery)
    assert delegator in _recipients(before)
    assert delegator not in _recipients(cached), "the tenant's reference version moved"
    assert delegator not in _recipients(after)


async def test_chat_channel_that_is_not_a_valid_name_is_unresolvable(
    world: World, pool: asyncpg.Pool
) -> None:
    tree = await Tree(world).build()
    event = world.event(
        tree.actor, tree.document, "message.posted", payload={"channel_id": "general chat"}
    )

    (outcome,) = await BatchResolver(ReferenceStore(pool), RULES).resolve([event])

    assert isinstance(outcome, Unresolvable)
    assert "ChannelNameError" in outcome.reason
