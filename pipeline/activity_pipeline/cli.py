"""Entry point of the `activity` command; each subsystem mounts its Typer app here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from activity_producer.migrate import upgrade_database
from activity_producer.relay import RelaySettings

from activity_pipeline.demo.run import DemoOptions, run_demo
from activity_pipeline.demo.wikiticker import DATA_FILE
from activity_pipeline.logs import configure_logging
from activity_pipeline.stack import stack_app, up
from activity_pipeline.workers import WorkerKind, create_pipeline_topics, run_relay, run_worker

__all__ = ["app", "main"]

app = typer.Typer(help="Operator commands of the activity pipeline.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

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
def relay(log_level: LogLevel = "info", json_logs: JsonLogs = False) -> None:
    """Move committed outbox rows to Kafka until stopped (Ctrl-C or SIGTERM)."""
    configure_logging(log_level, json_logs)
    run_relay(RelaySettings())


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
        int | None, typer.Option(help="Replay only the first N lines of the input.")
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Concurrent recording sessions.")
    ] = 8,
    rate: Annotated[
        float | None,
        typer.Option(help="Record at most this many activities per second (default: no limit)."),
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
