"""Entry point of the `activity` command; each subsystem mounts its Typer app here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from activity_producer.migrate import upgrade_database
from activity_producer.relay import RelaySettings

from activity_pipeline.audit_cli import audit_app
from activity_pipeline.bench.cli import bench_app
from activity_pipeline.deadletter_cli import deadletter_app
from activity_pipeline.demo.run import DemoOptions, run_demo
from activity_pipeline.demo.wikiticker import DATA_FILE
from activity_pipeline.explain_cli import explain_command
from activity_pipeline.logs import configure_logging
from activity_pipeline.settings_cli import settings
from activity_pipeline.stack import stack_app, up
from activity_pipeline.workers import WorkerKind, create_pipeline_topics, run_relay, run_worker

__all__ = ["app", "main"]

app = typer.Typer(help="Operator commands of the activity pipeline.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(bench_app, name="bench")
app.command(name="explain")(explain_command)
app.add_typer(deadletter_app, name="dead-letters")
app.add_typer(audit_app, name="audit")
app.command(name="settings")(settings)

LogLevel = Annotated[
    str,
    typer.Option("--log-level", help="Lowest level logged: debug, info, warning or error."),
]
JsonLogs = Annotated[bool, typer.Option("--json-logs", help="Log one JSON object per line.")]


@app.command()
def migrate(log_level: LogLevel = "info", json_logs: JsonLogs = False) -> None:
    """Create or upgrade the pipeline's tables in ACTIVITY_DATABASE_URL, and its Kafka topics."""
    configure_logging(log_level, json_logs)
    settings = RelaySettings()
    upgrade_database(settings.database_url)
    created = create_pipeline_topics(settings)
    typer.echo(f"database migrated; topics created: {', '.join(created) or 'none missing'}")


@app.command()
def relay(
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=100_000,
            help="Outbox rows per poll (env ACTIVITY_RELAY_BATCH_SIZE, default 5000).",
        ),
    ] = None,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Seconds between polls when no NOTIFY arrives "
            "(env ACTIVITY_RELAY_POLL_INTERVAL_S, default 1.0).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65_535,
            help="Port of /metrics and /healthz; 0 turns them off "
            "(env ACTIVITY_RELAY_METRICS_PORT, default 9464).",
        ),
    ] = None,
    retention: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds a sent row is kept before it is deleted; 0 deletes it at once "
            "(env ACTIVITY_RELAY_SENT_RETENTION_S, default 86400).",
        ),
    ] = None,
    cleanup_batch_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Sent rows deleted per statement; 0 turns cleanup off "
            "(env ACTIVITY_RELAY_CLEANUP_BATCH_SIZE, default 10000).",
        ),
    ] = None,
    log_level: LogLevel = "info",
    json_logs: JsonLogs = False,
) -> None:
    """Move committed outbox rows to Kafka until stopped (Ctrl-C or SIGTERM).

    One relay is active per outbox database (a PostgreSQL advisory lock); start
    more for standbys that take over within seconds. A row Kafka cannot take
    goes to the dead-letter topic with its reason. Every option defaults to its
    ACTIVITY_* environment variable; see docs/relay.md.
    """
    configure_logging(log_level, json_logs)
    overrides = {
        "relay_batch_size": batch_size,
        "relay_poll_interval_s": poll_interval,
        "relay_metrics_port": metrics_port,
        "relay_sent_retention_s": retention,
        "relay_cleanup_batch_size": cleanup_batch_size,
    }
    run_relay(
        RelaySettings(**{name: value for name, value in overrides.items() if value is not None})
    )


@app.command()
def worker(
    kind: Annotated[WorkerKind, typer.Argument(help="Which Faust worker to run.")],
    log_level: LogLevel = "info",
    json_logs: JsonLogs = False,
) -> None:
    """Run a Faust worker: `enrichment` resolves watchers, `sinks` publishes and archives."""
    configure_logging(log_level, json_logs)
    run_worker(kind, log_level)


@app.command()
def demo(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Replay only the first N lines of the input.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Concurrent recording sessions.")
    ] = 8,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="Record at most this many activities per second (default: no limit)."
        ),
    ] = None,
    data_file: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Input file (gzip NDJSON edits).")
    ] = DATA_FILE,
    log_level: LogLevel = "warning",
    json_logs: JsonLogs = False,
) -> None:
    """Replay the Wikipedia edit stream through the whole pipeline and print a summary.

    Starts the local stack if it is not running, recreates the `activity_demo`
    database, loads the reference data and runs the relay and both workers.
    """
    configure_logging(log_level, json_logs)
    typer.echo("checking the local stack, and starting it if it is not running")
    up()
    summary = run_demo(
        DemoOptions(limit=limit, concurrency=concurrency, rate_per_s=rate, data_file=data_file),
        echo=typer.echo,
    )
    typer.echo("")
    typer.echo(summary.render())
    if not summary.consistent:
        raise typer.Exit(code=1)


def main() -> None:
    """Run the `activity` command line."""
    app()


if __name__ == "__main__":
    main()
