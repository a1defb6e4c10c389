"""Typer commands `up`, `down` and `status` of the local stack, mounted as `activity stack`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import typer

from activity_pipeline.stack import manager
from activity_pipeline.stack.errors import StackError
from activity_pipeline.stack.service import ServiceStatus
from activity_pipeline.stack.settings import (
    CENTRIFUGO_API_KEY,
    StackSettings,
    load_settings,
)

__all__ = ["format_status_table", "stack_app"]

stack_app = typer.Typer(
    help=(
        "Run PostgreSQL, Kafka and Centrifugo on this machine without containers. "
        "Data and logs go to .stack/ in the project; downloads are cached in "
        "~/.cache/activity-pipeline/."
    ),
    no_args_is_help=True,
)


def format_status_table(statuses: Sequence[ServiceStatus]) -> str:
    """Return a fixed-width table with one line per service."""
    lines = [f"{'SERVICE':<12}{'PORT':<8}{'PID':<10}STATE"]
    for entry in statuses:
        pid = str(entry.pid) if entry.pid is not None else "-"
        lines.append(f"{entry.name:<12}{entry.port:<8}{pid:<10}{entry.state}")
    return "\n".join(lines)


def _connection_summary(settings: StackSettings) -> str:
    return "\n".join(
        [
            f"postgres dsn:       {settings.postgres_dsn}",
            f"kafka bootstrap:    {settings.kafka_bootstrap_servers}",
            f"centrifugo api:     {settings.centrifugo_url}/api (X-API-Key: {CENTRIFUGO_API_KEY})",
            f"centrifugo clients: ws://{settings.host}:{settings.centrifugo_port}"
            "/connection/websocket",
            f"logs:               {settings.logs_dir}",
        ]
    )


def _run(
    action: Callable[[StackSettings], list[ServiceStatus]],
) -> tuple[StackSettings, list[ServiceStatus]]:
    try:
        settings = load_settings()
        return settings, action(settings)
    except StackError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc


@stack_app.command()
def up() -> None:
    """Install missing services, start them and wait until all are healthy."""
    settings, statuses = _run(manager.up)
    typer.echo(format_status_table(statuses))
    typer.echo(_connection_summary(settings))


@stack_app.command()
def down() -> None:
    """Stop all services: gracefully first, then SIGKILL after a timeout."""
    _, statuses = _run(manager.down)
    typer.echo(format_status_table(statuses))


@stack_app.command()
def status() -> None:
    """Show each service's port, pid and state; exit code 1 unless all are healthy."""
    _, statuses = _run(manager.status)
    typer.echo(format_status_table(statuses))
    if not all(entry.healthy for entry in statuses):
        raise typer.Exit(code=1)
