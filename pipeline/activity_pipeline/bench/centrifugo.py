"""Benchmark of publishing into Centrifugo with the real input's fan-out: broadcast vs per channel.

The deliveries are those the enrichment rules give one day of Wikipedia edits
(resolved in memory from the reference data the edits imply), under tenant
ids of this run only, so no client of another run receives them. Four ways
of publishing them run one after the other against the same Centrifugo:

- broadcast + batch: the sink's publisher, one `batch` call per 500
  activities holding one `broadcast` per activity;
- broadcast + batch, stock `cent` parsing: the same requests through `cent`'s
  own `BatchRequest` and reply parsing, which builds a pydantic schema per
  broadcast;
- one publish per channel, shared client: one HTTP call per channel;
- one publish per channel, new client per activity: the replaced worker.

The figure is notifications (channel publications) per second; the ratios are
measured in the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from activity_schemas import Delivery
from activity_sinks.centrifugo import Broadcast, CentrifugoPublisher
from activity_sinks.notification import render_notification
from activity_streams.channels import inbox_channel
from activity_streams.preferences import FilterMode, Preference
from activity_streams.reference import ChainNode, ReferenceSnapshot
from activity_streams.watchers import resolve_delivery
from cent import AsyncClient, BatchRequest, BroadcastRequest, PublishRequest

from activity_pipeline.bench.enrichment import event_of
from activity_pipeline.demo.wikiticker import (
    DATA_FILE,
    ReferenceData,
    build_reference_data,
    edit_envelope,
    read_edits,
)

__all__ = [
    "CentrifugoBenchOptions",
    "CentrifugoBenchResult",
    "build_deliveries",
    "run_centrifugo_bench",
]

BATCH_SIZE = 500
"""Activities per `batch` call: the sink worker's default `sink_batch_size`."""

CALL_TIMEOUT_S = 30.0
"""Timeout of one Centrifugo call in the benchmark; generous, a slow call is a figure too."""

RETRY_BUDGET_S = 60.0
"""Retry budget of the benchmark's publisher; a run that exhausts it fails loudly."""

NOTIFICATION_MAX_BYTES = 8192
"""Notification cap, as the sink's default `notification_max_bytes`."""


@dataclass(frozen=True)
class CentrifugoBenchOptions:
    """Input size and target of one run."""

    api_url: str
    api_key: str
    limit: int = 5_000
    per_channel_sample: int = 500
    data_file: str = str(DATA_FILE)


@dataclass(frozen=True)
class _Figure:
    name: str
    activities: int
    notifications: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.notifications / self.seconds


@dataclass
class CentrifugoBenchResult:
    """Figures of one run, fastest design first."""

    activities: int
    notifications: int
    figures: list[_Figure] = field(default_factory=list)

    def render(self) -> str:
        """Return the figures as lines of text."""
        fast = self.figures[0]
        lines = [
            "Centrifugo publishing benchmark (real fan-out of the wikiticker edits)",
            f"  activities: {self.activities:,}; notifications (channel publications): "
            f"{self.notifications:,} ({self.notifications / self.activities:.2f} per activity)",
        ]
        for figure in self.figures:
            lines.append(
                f"  {figure.name:<48} {figure.per_s:>9,.0f} notifications/s "
                f"({figure.activities:,} activities, {figure.notifications:,} notifications "
                f"in {figure.seconds:.2f} s)"
            )
        for figure in self.figures[1:]:
            lines.append(f"  ratio {fast.name} / {figure.name}: {fast.per_s / figure.per_s:,.1f}x")
        return "\n".join(lines)


def _snapshot(data: ReferenceData) -> ReferenceSnapshot:
    """Return every reference row as one in-memory snapshot, with each resource's chain."""
    parents: dict[tuple[UUID, UUID], tuple[UUID | None, UUID | None]] = {
        (tenant, resource): (parent, owner)
        for tenant, resource, _, parent, owner, _ in data.resources
    }
    snapshot = ReferenceSnapshot()
    for tenant, resource in parents:
        nodes: list[ChainNode] = []
        current: UUID | None = resource
        while current is not None:
            parent, owner = parents[(tenant, current)]
            nodes.append(ChainNode(current, owner, len(nodes)))
            current = parent
        snapshot.chains[(tenant, resource)] = nodes
    for _, tenant, principal, resource, scope in data.subscriptions:
        snapshot.subscriptions[(tenant, resource)].append((principal, scope))
    for _, tenant, principal, resource, role in data.role_bindings:
        snapshot.role_bindings[(tenant, resource)].append((principal, role))
    for tenant, principal, mode, patterns in data.preferences:
        snapshot.preferences[(tenant, principal)] = Preference(FilterMode(mode), tuple(patterns))
    return snapshot


def build_deliveries(limit: int | None, data_file: str = str(DATA_FILE)) -> list[Delivery]:
    """Return the deliveries of the first `limit` edits, under tenant ids unique to this call."""
    edits = list(read_edits(Path(data_file), limit))
    snapshot = _snapshot(build_reference_data(edits))
    run = uuid4()
    deliveries = []
    for edit in edits:
        delivery = resolve_delivery(event_of(edit_envelope(edit)), snapshot)
        event = delivery.event.model_copy(
            update={"tenant_id": uuid5(NAMESPACE_URL, f"bench/{run}/{delivery.event.tenant_id}")}
        )
        shared = tuple(
            channel.replace(str(delivery.event.tenant_id), str(event.tenant_id))
            for channel in delivery.shared_channels
        )
        deliveries.append(delivery.model_copy(update={"event": event, "shared_channels": shared}))
    return deliveries


def _broadcasts(deliveries: Sequence[Delivery], design: str) -> list[Broadcast]:
    """Return one broadcast per delivery, keyed per design so that no design dedupes another."""
    broadcasts = []
    for delivery in deliveries:
        event = delivery.event
        channels = tuple(
            inbox_channel(event.tenant_id, r.principal_id) for r in delivery.recipients
        ) + tuple(delivery.shared_channels)
        notification = render_notification(event, NOTIFICATION_MAX_BYTES, "/activities/{event_id}")
        broadcasts.append(Broadcast(channels, notification.data, f"{event.event_id}:{design}"))
    return broadcasts


async def _broadcast_batches(options: CentrifugoBenchOptions, broadcasts: list[Broadcast]) -> None:
    publisher = CentrifugoPublisher(
        options.api_url, options.api_key, CALL_TIMEOUT_S, RETRY_BUDGET_S
    )
    await publisher.start()
    try:
        for start in range(0, len(broadcasts), BATCH_SIZE):
            rejected = await publisher.broadcast(broadcasts[start : start + BATCH_SIZE])
            if any(rejected):
                raise RuntimeError(f"Centrifugo rejected channels: {rejected}")
    finally:
        await publisher.stop()


async def _stock_cent_batches(options: CentrifugoBenchOptions, broadcasts: list[Broadcast]) -> None:
    client = AsyncClient(options.api_url, options.api_key, timeout=CALL_TIMEOUT_S)
    try:
        for start in range(0, len(broadcasts), BATCH_SIZE):
            requests = [
                BroadcastRequest(
                    channels=list(b.channels), data=b.data, idempotency_key=b.idempotency_key
                )
                for b in broadcasts[start : start + BATCH_SIZE]
            ]
            await client.batch(BatchRequest(requests=requests, parallel=True))
    finally:
        await client._session.close()


async def _publish_per_channel(
    options: CentrifugoBenchOptions, broadcasts: list[Broadcast], client_per_activity: bool
) -> None:
    shared = AsyncClient(options.api_url, options.api_key, timeout=CALL_TIMEOUT_S)
    try:
        for broadcast in broadcasts:
            client = (
                AsyncClient(options.api_url, options.api_key, timeout=CALL_TIMEOUT_S)
                if client_per_activity
                else shared
            )
            try:
                for channel in broadcast.channels:
                    await client.publish(
                        PublishRequest(
                            channel=channel,
                            data=broadcast.data,
                            idempotency_key=broadcast.idempotency_key,
                        )
                    )
            finally:
                if client_per_activity:
                    await client._session.close()
    finally:
        await shared._session.close()


async def _timed(
    name: str, broadcasts: list[Broadcast], run: Callable[[], Awaitable[None]]
) -> _Figure:
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    return _Figure(name, len(broadcasts), sum(len(b.channels) for b in broadcasts), seconds)


async def _run(
    options: CentrifugoBenchOptions, echo: Callable[[str], None]
) -> CentrifugoBenchResult:
    echo("resolving the deliveries of the input...")
    deliveries = build_deliveries(options.limit, options.data_file)

    fast = _broadcasts(deliveries, "broadcast")
    stock = _broadcasts(deliveries, "stock")
    sample = _broadcasts(deliveries[: options.per_channel_sample], "per-channel")
    old = _broadcasts(deliveries[: options.per_channel_sample], "old")
    result = CentrifugoBenchResult(len(fast), sum(len(b.channels) for b in fast))

    echo("broadcast + batch...")
    result.figures.append(
        await _timed("broadcast + batch", fast, lambda: _broadcast_batches(options, fast))
    )
    echo("broadcast + batch through stock cent parsing...")
    result.figures.append(
        await _timed(
            "broadcast + batch, stock cent parsing",
            stock,
            lambda: _stock_cent_batches(options, stock),
        )
    )
    echo("one publish per channel...")
    result.figures.append(
        await _timed(
            "one publish per channel, shared client",
            sample,
            lambda: _publish_per_channel(options, sample, client_per_activity=False),
        )
    )
    result.figures.append(
        await _timed(
            "one publish per channel, client per activity",
            old,
            lambda: _publish_per_channel(options, old, client_per_activity=True),
        )
    )
    return result


def run_centrifugo_bench(
    options: CentrifugoBenchOptions, echo: Callable[[str], None] = print
) -> CentrifugoBenchResult:
    """Run every design on the same deliveries and return their figures."""
    return asyncio.run(_run(options, echo))
