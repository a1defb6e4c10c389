"""Why an activity reaches whom: the watcher rules replayed with every decision kept.

`explain()` resolves one activity (a recorded one, or a hypothetical one
built by the caller) exactly as the enrichment agent does, and returns a
verdict per principal: notified and by which rules, or left out and why
(actor, no access, visibility, preference, tenant, not a watcher).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from activity_schemas import ActivityEvent, ActorKind, ActorRef, Delivery, ResourceRef

from activity_streams.errors import EnrichmentError
from activity_streams.reference import ReferenceStore
from activity_streams.watchers import DEFAULT_RULES, Exclusion, Rules, chat_channel_id, resolve

__all__ = ["Explanation", "Verdict", "explain", "load_recorded_event"]

_RECORDED = """
SELECT id, tenant_id, correlation_id, action, resource_id, resource_type, actor_principal_id,
       target_principal_id, visibility, payload::text AS payload, occurred_at, recorded_at
FROM activities WHERE id = $1
"""

_OTHER_TENANTS = """
SELECT DISTINCT principal_id FROM (
    SELECT principal_id, tenant_id FROM subscriptions
    WHERE resource_id = $1 AND revoked_at IS NULL AND principal_id = ANY($3::uuid[])
    UNION ALL
    SELECT principal_id, tenant_id FROM role_bindings
    WHERE resource_id = $1 AND revoked_at IS NULL AND principal_id = ANY($3::uuid[])
    UNION ALL
    SELECT owner_principal_id, tenant_id FROM resources
    WHERE id = $1 AND owner_principal_id = ANY($3::uuid[])
) found
WHERE tenant_id <> $2
"""


@dataclass(frozen=True)
class Verdict:
    """The outcome for one principal: notified, or left out with the reason."""

    principal_id: UUID
    notified: bool
    rules: tuple[str, ...]
    """The rules that chose it (a recipient's reasons), or that found it before it was left out."""
    why_not: Exclusion | None = None


@dataclass(frozen=True)
class Explanation:
    """The delivery of one activity with a verdict for every principal considered."""

    event: ActivityEvent
    delivery: Delivery
    verdicts: tuple[Verdict, ...]

    def render(self) -> str:
        """Return the explanation as lines of text, notified principals first."""
        event = self.event
        lines = [
            f"activity {event.event_id}: {event.action} on {event.resource.type} "
            f"{event.resource.id} by {event.actor.id} (tenant {event.tenant_id}, "
            f"visibility {event.visibility.value})",
            f"shared channels: {', '.join(self.delivery.shared_channels) or 'none'}",
        ]
        for verdict in sorted(self.verdicts, key=lambda v: (not v.notified, str(v.principal_id))):
            rules = ", ".join(verdict.rules) or "-"
            if verdict.notified:
                lines.append(f"  notified      {verdict.principal_id}  by {rules}")
            else:
                why = verdict.why_not.value if verdict.why_not is not None else "?"
                lines.append(f"  not notified  {verdict.principal_id}  {why} (found by {rules})")
        if len(lines) == 2:
            lines.append("  nobody is notified and no watcher was found")
        return "\n".join(lines)


async def load_recorded_event(pool: asyncpg.Pool, event_id: UUID) -> ActivityEvent:
    """Return the event document of a recorded activity; raise `EnrichmentError` if unknown."""
    row = await pool.fetchrow(_RECORDED, event_id)
    if row is None:
        raise EnrichmentError(
            f"no activity with id {event_id} in the activities table; check the id and "
            "ACTIVITY_DATABASE_URL, or describe a hypothetical activity instead"
        )
    return ActivityEvent.model_validate(
        {
            "event_id": row["id"],
            "tenant_id": row["tenant_id"],
            "time": row["occurred_at"],
            "recorded_at": row["recorded_at"],
            "correlation_id": row["correlation_id"],
            "actor": ActorRef(id=row["actor_principal_id"], kind=ActorKind.USER),
            "resource": ResourceRef(id=row["resource_id"], type=row["resource_type"]),
            "action": row["action"],
            "target_principal_id": row["target_principal_id"],
            "visibility": row["visibility"],
            "payload": json.loads(row["payload"]),
            "targets": ("inbox", "resource", "chat"),
        }
    )


async def explain(
    pool: asyncpg.Pool,
    event: ActivityEvent,
    principals: Iterable[UUID] = (),
    rules: Rules = DEFAULT_RULES,
) -> Explanation:
    """Resolve `event` as the agent does and return, per principal, whether and why it hears of it.

    `principals` adds principals to explain although no rule found them, such as
    someone who expected a notification.
    """
    store = ReferenceStore(pool)
    conversation = chat_channel_id(event)
    chats = {(event.tenant_id, conversation)} if isinstance(conversation, UUID) else set()
    snapshot = await store.load({(event.tenant_id, event.resource.id)}, chats)
    resolution = resolve(event, snapshot, rules, explain=True)

    verdicts = [
        Verdict(r.principal_id, notified=True, rules=r.reasons)
        for r in resolution.delivery.recipients
    ]
    verdicts += [
        Verdict(principal, notified=False, rules=found_by, why_not=why)
        for principal, (why, found_by) in resolution.excluded.items()
    ]
    known = {verdict.principal_id for verdict in verdicts}
    asked = [principal for principal in dict.fromkeys(principals) if principal not in known]
    if event.actor.id in asked:
        verdicts.append(Verdict(event.actor.id, False, (), Exclusion.ACTOR))
        asked.remove(event.actor.id)
    if asked:
        rows = await pool.fetch(_OTHER_TENANTS, event.resource.id, event.tenant_id, asked)
        elsewhere = {row["principal_id"] for row in rows}
        verdicts += [
            Verdict(
                principal,
                False,
                (),
                Exclusion.TENANT if principal in elsewhere else Exclusion.NOT_A_WATCHER,
            )
            for principal in asked
        ]
    return Explanation(event, resolution.delivery, tuple(verdicts))
