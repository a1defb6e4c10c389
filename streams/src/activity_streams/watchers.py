"""Who hears of an activity, and why: the watcher rules applied to one activity.

The rules, in order: explicit subscribers on the resource (any scope) or on an
ancestor (scope `descendants`); the resource owner; principals with an
`owner` or `delegator` role binding on the resource or an ancestor; for chat
actions, every principal bound to the chat channel. Then the actor and the
target principal are removed, visibility is enforced, and each remaining
watcher's preference is applied. The target principal is reached through
its own inbox whatever its preference, because the action is about it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from uuid import UUID

from activity_schemas import ActivityEvent, Delivery, DeliveryChannel, Recipient, Visibility

from activity_streams.channels import chat_channel, resource_channel
from activity_streams.preferences import DEFAULT_MUTATION_ACTIONS, wants_notification
from activity_streams.reference import ChainNode, ReferenceSnapshot

__all__ = ["chat_channel_id", "invitee", "resolve_delivery"]

_INVITEE_KEYS = ("invitee_principal_id", "target_principal_id", "principal_id")


def chat_channel_id(event: ActivityEvent) -> UUID | str | None:
    """Return the chat conversation of a `message.*` or `receipt.*` action, if any."""
    if not event.action.startswith(("message.", "receipt.")):
        return None
    channel_id = event.payload.get("channel_id")
    if channel_id is not None:
        try:
            return UUID(str(channel_id))
        except ValueError:
            return str(channel_id)
    if event.resource.type == "channel":
        return event.resource.id
    return None


def invitee(event: ActivityEvent) -> UUID | None:
    """Return the principal an activity is about: its target, or the invitee of `invite.*`."""
    if event.target_principal_id is not None:
        return event.target_principal_id
    if not event.action.startswith("invite."):
        return None
    for key in _INVITEE_KEYS:
        value = event.payload.get(key)
        if value is None:
            continue
        try:
            return UUID(str(value))
        except ValueError:
            continue
    return None


def _has_access(
    principal: UUID, nodes: Sequence[ChainNode], bound: dict[UUID, frozenset[UUID]]
) -> bool:
    """Whether the principal owns the first node or holds any role on one of `nodes`."""
    if nodes and nodes[0].owner_principal_id == principal:
        return True
    return any(principal in bound[node.resource_id] for node in nodes)


def resolve_delivery(
    event: ActivityEvent,
    snapshot: ReferenceSnapshot,
    mutation_actions: Sequence[str] = DEFAULT_MUTATION_ACTIONS,
) -> Delivery:
    """Return the recipients and shared channels of one activity."""
    tenant_id = event.tenant_id
    chain = snapshot.chain(tenant_id, event.resource.id)
    reasons: dict[UUID, list[str]] = defaultdict(list)

    # 1. Subscribers: any scope on the resource itself, `descendants` on an ancestor.
    for node in chain:
        for principal, scope in snapshot.subscriptions.get((tenant_id, node.resource_id), ()):
            if node.depth == 0 or scope == "descendants":
                reasons[principal].append(f"subscription:{scope}:{node.resource_id}")

    # 2. The owner of the resource.
    owner = chain[0].owner_principal_id
    if owner is not None:
        reasons[owner].append("owner")

    # 3. Owner and delegator role bindings on the resource or an ancestor.
    bound: dict[UUID, frozenset[UUID]] = {}
    for node in chain:
        bound[node.resource_id] = snapshot.bound_principals(tenant_id, node.resource_id)
        for principal, role in snapshot.watching_bindings(tenant_id, node.resource_id):
            reasons[principal].append(f"role:{role}:{node.resource_id}")

    # 4. Chat members.
    conversation = chat_channel_id(event)
    if conversation is not None and isinstance(conversation, UUID):
        for principal, _ in snapshot.role_bindings.get((tenant_id, conversation), ()):
            reasons[principal].append(f"chat_member:{conversation}")

    # 5. Neither the actor nor the target hears of it as a watcher.
    target = invitee(event)
    reasons.pop(event.actor.id, None)
    if target is not None:
        reasons.pop(target, None)

    # 6. Visibility, then preferences.
    watchers = _visible_watchers(event, chain, bound, reasons)
    recipients = [
        Recipient(principal_id=principal, reasons=tuple(reasons[principal]))
        for principal in watchers
        if wants_notification(
            snapshot.preferences.get((tenant_id, principal)), event.action, mutation_actions
        )
    ]
    if target is not None and target != event.actor.id:
        recipients.append(Recipient(principal_id=target, reasons=("target",)))
    if DeliveryChannel.INBOX not in event.targets:
        recipients = []

    return Delivery(
        event=event,
        recipients=tuple(recipients),
        shared_channels=_shared_channels(event, conversation),
    )


def _visible_watchers(
    event: ActivityEvent,
    chain: list[ChainNode],
    bound: dict[UUID, frozenset[UUID]],
    reasons: dict[UUID, list[str]],
) -> list[UUID]:
    """Return the watchers that the activity's visibility lets hear of it, sorted."""
    match event.visibility:
        case Visibility.PRIVATE:
            return []
        case Visibility.TENANT:
            allowed = list(reasons)
        case Visibility.RESOURCE:
            allowed = [p for p in reasons if _has_access(p, chain, bound)]
        case Visibility.SCOPE:
            scope_nodes = chain[1:] or chain
            allowed = [p for p in reasons if _has_access(p, scope_nodes, bound)]
    return sorted(allowed)


def _shared_channels(event: ActivityEvent, conversation: UUID | str | None) -> tuple[str, ...]:
    if event.visibility == Visibility.PRIVATE:
        return ()
    channels = []
    if DeliveryChannel.RESOURCE in event.targets:
        channels.append(resource_channel(event.tenant_id, event.resource.id))
    if conversation is not None and DeliveryChannel.CHAT in event.targets:
        channels.append(chat_channel(event.tenant_id, conversation))
    return tuple(channels)
