"""The `activity explain` command: who hears of an activity, who does not, and why.

It explains a recorded activity (`--event-id`) or a hypothetical one described
by its tenant, actor, resource and action, against the reference data in
ACTIVITY_DATABASE_URL, with the enrichment worker's settings.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID, uuid4

import asyncpg
import typer
from activity_schemas import ActivityEvent, ActorKind, ActorRef, ResourceRef, Visibility
from activity_schemas.errors import ActivityPipelineError
from activity_streams.explain import Explanation, explain, load_recorded_event
from activity_streams.settings import StreamsSettings
from activity_streams.watchers import Rules

__all__ = ["explain_command"]


async def _explain(
    settings: StreamsSettings, source: UUID | ActivityEvent, principals: list[UUID]
) -> Explanation:
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=2)
    try:
        if isinstance(source, ActivityEvent):
            event = source
        else:
            event = await load_recorded_event(pool, source)
        rules = Rules(settings.mutation_actions, settings.critical_actions)
        return await explain(pool, event, principals, rules)
    finally:
        await pool.close()


def explain_command(
    event_id: Annotated[
        UUID | None, typer.Option("--event-id", help="A recorded activity to explain.")
    ] = None,
    tenant: Annotated[UUID | None, typer.Option(help="Tenant of a hypothetical activity.")] = None,
    actor: Annotated[UUID | None, typer.Option(help="Actor of a hypothetical activity.")] = None,
    resource: Annotated[
        UUID | None, typer.Option(help="Resource of a hypothetical activity.")
    ] = None,
    resource_type: Annotated[str, typer.Option(help="Its resource type.")] = "resource",
    action: Annotated[str, typer.Option(help="Its action, e.g. resource.updated.")] = (
        "resource.updated"
    ),
    visibility: Annotated[Visibility, typer.Option(help="Its visibility.")] = Visibility.RESOURCE,
    target: Annotated[UUID | None, typer.Option(help="Its target principal.")] = None,
    principal: Annotated[
        list[UUID] | None,
        typer.Option("--principal", help="Also explain this principal (repeatable)."),
    ] = None,
) -> None:
    """Explain who would be notified of an activity, who would not, and why not."""
    settings = StreamsSettings()
    source: UUID | ActivityEvent
    if event_id is not None:
        source = event_id
    else:
        if tenant is None or actor is None or resource is None:
            raise typer.BadParameter(
                "give --event-id, or --tenant, --actor and --resource for a hypothetical activity"
            )
        now = datetime.now(UTC)
        source = ActivityEvent(
            event_id=uuid4(),
            tenant_id=tenant,
            time=now,
            recorded_at=now,
            correlation_id=uuid4(),
            actor=ActorRef(id=actor, kind=ActorKind.USER),
            resource=ResourceRef(id=resource, type=resource_type),
            action=action,
            target_principal_id=target,
            visibility=visibility,
            payload={},
            targets=("inbox", "resource", "chat"),
        )

    try:
        explanation = asyncio.run(_explain(settings, source, principal or []))
    except ActivityPipelineError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(explanation.render())
