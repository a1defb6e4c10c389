"""Who hears of an activity, and why: the watcher rules applied to one activity.

The rules, in order:
1. explicit subscribers on the resource (any scope) or on an ancestor (scope
   `descendants`);
2. the resource owner;
3. principals with an `owner` or `delegator` role binding on the resource or
   an ancestor;
4. for chat actions, every principal bound to the chat channel.

Then the actor and the
target principal are removed, visibility is enforced, and each remaining
watcher's preference is applied, unless the action is critical. The target
principal is reached through its own inbox whatever its preference, because
the action is about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from activity_schemas import ActivityEvent, Delivery, DeliveryChannel, Recipient, Visibility

from activity_streams.channels import chat_channel, resource_channel
from activity_streams.preferences import (
    DEFAULT_MUTATION_ACTIONS,
    matches_any,
    wants_notification,
)
from activity_streams.reference import ChainNode, ReferenceSnapshot

__all__ = [
    "CRITICAL_REASON",
    "DEFAULT_RULES",
    "Exclusion",
    "Resolution",
    "Rules",
    "chat_channel_id",
    "invitee",
    "resolve",
    "resolve_delivery",
]

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


class Exclusion(StrEnum):
    """Reason that a principal found by the watcher rules is not notified."""

    ACTOR = "actor"
    NO_ACCESS = "no_access"
    VISIBILITY = "visibility"
    PREFERENCE = "preference"
    NO_INBOX_TARGET = "no_inbox_target"
    TENANT = "tenant"
    NOT_A_WATCHER = "not_a_watcher"


@dataclass(frozen=True)
class Rules:
    """The configurable parts of the rules: which actions are mutations, which are critical."""

    mutation_actions: tuple[str, ...] = DEFAULT_MUTATION_ACTIONS
    critical_actions: tuple[str, ...] = ()


DEFAULT_RULES = Rules()

CRITICAL_REASON = "critical"
"""Reason added to a recipient whose preference would have filtered a critical action."""


@dataclass
class Resolution:
    """The delivery of one activity, and why each other watcher found was left out."""

    delivery: Delivery
    excluded: dict[UUID, tuple[Exclusion, tuple[str, ...]]] = field(default_factory=dict)
    """Principal -> (why not notified, the watcher rules that had found it)."""


def _has_access(
    principal: UUID, nodes: Sequence[ChainNode], bound: Sequence[frozenset[UUID]]
) -> bool:
    """Whether the principal owns the first node or holds any role on one of the nodes."""
    if nodes and nodes[0].owner_principal_id == principal:
        return True
    return any(principal in principals for principals in bound)


def resolve_delivery(
    event: ActivityEvent,
    snapshot: ReferenceSnapshot,
    mutation_actions: Sequence[str] = DEFAULT_MUTATION_ACTIONS,
    critical_actions: Sequence[str] = (),
) -> Delivery:
    """Return the recipients, with their reasons, and the shared channels of one activity."""
    rules = Rules(tuple(mutation_actions), tuple(critical_actions))
    return resolve(event, snapshot, rules).delivery


def resolve(
    event: ActivityEvent,
    snapshot: ReferenceSnapshot,
    rules: Rules = DEFAULT_RULES,
    explain: bool = False,
) -> Resolution:
    """Apply the watcher rules to one activity; with `explain`, record who was left out and why."""
    tenant_id = event.tenant_id
    chain = snapshot.chain(tenant_id, event.resource.id)
    reasons: dict[UUID, list[str]] = {}
    excluded: dict[UUID, tuple[Exclusion, tuple[str, ...]]] = {}

    # 1. Subscribers: any scope on the resource itself, `descendants` on an ancestor.
    node_watchers = [snapshot.node_watchers(tenant_id, node.resource_id) for node in chain]
    for depth, contribution in enumerate(node_watchers):
        subscribers = (
            contribution.subscribers if depth == 0 else contribution.descendants_subscribers
        )
        for principal, reason in subscribers:
            found = reasons.get(principal)
            if found is None:
                reasons[principal] = [reason]
            else:
                found.append(reason)

    # 2. The owner of the resource.
    owner = chain[0].owner_principal_id
    if owner is not None:
        reasons.setdefault(owner, []).append("owner")

    # 3. Owner and delegator role bindings on the resource or an ancestor.
    for contribution in node_watchers:
        for principal, reason in contribution.delegators:
            found = reasons.get(principal)
            if found is None:
                reasons[principal] = [reason]
            else:
                found.append(reason)

    # 4. Chat members.
    conversation = chat_channel_id(event)
    if isinstance(conversation, UUID):
        for principal, _ in snapshot.role_bindings.get((tenant_id, conversation), ()):
            reasons.setdefault(principal, []).append(f"chat_member:{conversation}")

    # 5. Neither the actor nor the target hears of it as a watcher.
    target = invitee(event)
    actor_reasons = reasons.pop(event.actor.id, None)
    if explain and actor_reasons is not None:
        excluded[event.actor.id] = (Exclusion.ACTOR, tuple(actor_reasons))
    if target is not None:
        reasons.pop(target, None)

    # 6. Visibility, then preferences; critical actions skip preferences.
    watchers = _visible_watchers(event, snapshot, chain, reasons, excluded if explain else None)
    critical = matches_any(event.action, rules.critical_actions)
    recipients: list[Recipient] = []
    for principal in watchers:
        preference = snapshot.preference(tenant_id, principal)
        chosen_by = reasons[principal]
        if not wants_notification(preference, event.action, rules.mutation_actions):
            if not critical:
                if explain:
                    excluded[principal] = (Exclusion.PREFERENCE, tuple(chosen_by))
                continue
            chosen_by = [*chosen_by, CRITICAL_REASON]
        recipients.append(Recipient(principal_id=principal, reasons=tuple(chosen_by)))
    if target is not None and target != event.actor.id:
        recipients.append(Recipient(principal_id=target, reasons=("target",)))
    if DeliveryChannel.INBOX not in event.targets:
        if explain:
            for recipient in recipients:
                excluded[recipient.principal_id] = (Exclusion.NO_INBOX_TARGET, recipient.reasons)
        recipients = []

    delivery = Delivery(
        event=event,
        recipients=tuple(recipients),
        shared_channels=_shared_channels(event, conversation),
    )
    return Resolution(delivery, excluded)


def _visible_watchers(
    event: ActivityEvent,
    snapshot: ReferenceSnapshot,
    chain: list[ChainNode],
    reasons: dict[UUID, list[str]],
    excluded: dict[UUID, tuple[Exclusion, tuple[str, ...]]] | None,
) -> list[UUID]:
    """Return the watchers that the activity's visibility lets hear of it, sorted."""
    tenant_id = event.tenant_id
    match event.visibility:
        case Visibility.PRIVATE:
            allowed: list[UUID] = []
        case Visibility.TENANT:
            allowed = list(reasons)
        case Visibility.RESOURCE | Visibility.SCOPE:
            nodes = chain if event.visibility == Visibility.RESOURCE else (chain[1:] or chain)
            bound = [snapshot.bound_principals(tenant_id, node.resource_id) for node in nodes]
            allowed = [p for p in reasons if _has_access(p, nodes, bound)]
    if excluded is not None:
        private = event.visibility == Visibility.PRIVATE
        why = Exclusion.VISIBILITY if private else Exclusion.NO_ACCESS
        kept = set(allowed)
        for principal, chosen_by in reasons.items():
            if principal not in kept:
                excluded[principal] = (why, tuple(chosen_by))
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
