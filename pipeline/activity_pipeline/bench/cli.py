"""The `activity bench` commands: one command per benchmark, each printing its figures."""

from __future__ import annotations

from typing import Annotated

import typer

from activity_pipeline.bench.recording import Driver, RecordingBenchOptions, run_recording_bench
from activity_pipeline.logs import configure_logging

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)


@bench_app.command()
def recording(
    transactions: Annotated[
        int, typer.Option(min=10, help="Measured transactions of each kind.")
    ] = 3_000,
    warmup: Annotated[int, typer.Option(min=0, help="Unmeasured transactions first.")] = 300,
    driver: Annotated[Driver, typer.Option(help="Session kind of the service.")] = Driver.ASYNC,
) -> None:
    """Measure what recording an activity adds to a transaction: median, p99 and ratio."""
    configure_logging("warning")
    result = run_recording_bench(
        RecordingBenchOptions(transactions, warmup, driver), echo=typer.echo
    )
    typer.echo("")
    typer.echo(result.render())


@bench_app.command()
def archive(
    records: Annotated[int, typer.Option(min=100, help="Audit records written.")] = 100_000,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants they are spread over.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per sink batch.")] = 500,
) -> None:
    """Measure records per second into the audit archive and verify time per million."""
    from activity_pipeline.bench.archive import ArchiveBenchOptions, run_archive_bench

    configure_logging("warning")
    result = run_archive_bench(
        ArchiveBenchOptions(records=records, tenants=tenants, batch_size=batch_size),
        echo=typer.echo,
    )
    typer.echo("")
    typer.echo(result.render())


@bench_app.command()
def enrichment(
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N edits of the input.")
    ] = None,
    sample: Annotated[
        int, typer.Option(min=10, help="Activities resolved the per-activity way.")
    ] = 2_000,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Activities per batch, as ACTIVITY_ENRICHMENT_BATCH_SIZE.")
    ] = 500,
    through_faust: Annotated[
        bool,
        typer.Option(help="Also run one enrichment worker and feed it through Kafka."),
    ] = False,
) -> None:
    """Measure activities per second one enrichment worker resolves: batched vs per-activity."""
    from activity_streams.settings import StreamsSettings

    from activity_pipeline.bench.enrichment import run_enrichment_bench

    configure_logging("warning")
    result = run_enrichment_bench(
        StreamsSettings().database_url,
        limit=limit,
        sample=sample,
        batch_size=batch_size,
        through_faust=through_faust,
    )
    typer.echo(result.render())


@bench_app.command()
def relay(
    rows: Annotated[
        int, typer.Option(min=1_000, help="Rows the batched relay drains from a full outbox.")
    ] = 100_000,
    naive_rows: Annotated[
        int, typer.Option(min=100, help="Rows the naive row-at-a-time relay drains.")
    ] = 2_000,
    rate: Annotated[
        float, typer.Option(min=10, help="Rows per second committed in the latency phase.")
    ] = 200.0,
    seconds: Annotated[float, typer.Option(min=1, help="Length of the latency phase.")] = 10.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per poll of the relay.")] = 5_000,
) -> None:
    """Measure rows per second outbox to Kafka and commit-to-ack p50/p99: batched vs naive."""
    from activity_pipeline.bench.relay import RelayBenchOptions, run_relay_bench

    configure_logging("warning")
    result = run_relay_bench(
        RelayBenchOptions(
            rows=rows,
            naive_rows=naive_rows,
            latency_rate_per_s=rate,
            latency_seconds=seconds,
            batch_size=batch_size,
        ),
        echo=typer.echo,
    )
    typer.echo("")
    typer.echo(result.render())


@bench_app.command()
def centrifugo(
    limit: Annotated[int, typer.Option(min=1, help="Use the first N edits of the input.")] = 5_000,
    per_channel_sample: Annotated[
        int, typer.Option(min=10, help="Activities published one channel at a time.")
    ] = 500,
    api_url: Annotated[
        str | None, typer.Option(help="Centrifugo HTTP API (default: ACTIVITY_CENTRIFUGO_API_URL).")
    ] = None,
) -> None:
    """Measure notifications per second into Centrifugo: broadcast + batch vs per channel."""
    from activity_sinks.settings import SinkSettings

    from activity_pipeline.bench.centrifugo import CentrifugoBenchOptions, run_centrifugo_bench

    configure_logging("warning")
    settings = SinkSettings()
    result = run_centrifugo_bench(
        CentrifugoBenchOptions(
            api_url=api_url or settings.centrifugo_api_url,
            api_key=settings.centrifugo_api_key.get_secret_value(),
            limit=limit,
            per_channel_sample=per_channel_sample,
        ),
        echo=typer.echo,
    )
    typer.echo("")
    typer.echo(result.render())
