"""Health, readiness and Prometheus metrics on the web server of each Faust worker.

`install_web_endpoints(app)` adds three views to a Faust app:

- `GET /health`: 200 while the worker runs (liveness); 503 once it crashed;
- `GET /ready`: 200 once the worker joined its consumer group and finished a
  rebalance, 503 while it starts, rebalances or stops (readiness);
- `GET /metrics`: every metric of the process's default Prometheus registry,
  plus the worker's consumer group state: assigned partitions and consumer lag.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import faust
import structlog
from activity_schemas.settings import ActivitySettings
from faust import web
from faust.types import TP
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from pydantic import Field

__all__ = [
    "HEALTH_PATH",
    "METRICS_PATH",
    "READY_PATH",
    "WorkerState",
    "WorkerStateTracker",
    "WorkerWebSettings",
    "install_web_endpoints",
]

log = structlog.get_logger(__name__)

HEALTH_PATH = "/health"
READY_PATH = "/ready"
METRICS_PATH = "/metrics"

HTTP_OK = 200
HTTP_UNAVAILABLE = 503


class WorkerWebSettings(ActivitySettings):
    """Listen address of a Faust worker's web server (health, readiness, metrics)."""

    web_bind: str = Field(
        default="127.0.0.1",
        description=(
            "Address the Faust worker's web server listens on; 0.0.0.0 in a container, so that "
            "health checks and Prometheus reach it. The port is the worker's own web port setting."
        ),
    )


class WorkerState(StrEnum):
    """Life-cycle state of a Faust worker, as readiness reports it."""

    STARTING = "starting"
    REBALANCING = "rebalancing"
    READY = "ready"
    STOPPING = "stopping"


_TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STARTING: frozenset(
        {WorkerState.REBALANCING, WorkerState.READY, WorkerState.STOPPING}
    ),
    WorkerState.REBALANCING: frozenset(
        {WorkerState.REBALANCING, WorkerState.READY, WorkerState.STOPPING}
    ),
    WorkerState.READY: frozenset(
        {WorkerState.REBALANCING, WorkerState.READY, WorkerState.STOPPING}
    ),
    WorkerState.STOPPING: frozenset({WorkerState.STOPPING}),
}
"""The states a worker may move to from each state; a stopping worker never comes back."""


class WorkerStateTracker:
    """Follows a Faust app's rebalance and shutdown signals to know whether it is ready."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.state = WorkerState.STARTING

    def move_to(self, target: WorkerState) -> None:
        """Move to `target` if the transition table allows it; ignore late signals otherwise."""
        if target not in _TRANSITIONS[self.state]:
            log.debug("worker_state_ignored", state=self.state.value, target=target.value)
            return
        if target is not self.state:
            log.info("worker_state", app=self.app.conf.id, state=target.value)
        self.state = target

    @property
    def ready(self) -> bool:
        """Whether the worker owns its assignment and processes records."""
        return self.state is WorkerState.READY and not self.app.rebalancing

    def connect(self) -> None:
        """Subscribe to the app's signals."""

        def on_revoked(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.move_to(WorkerState.REBALANCING)

        def on_complete(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.move_to(WorkerState.READY)

        def on_shutdown(_: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
            self.move_to(WorkerState.STOPPING)

        self.app.on_partitions_revoked.connect(on_revoked)
        self.app.on_rebalance_complete.connect(on_complete)
        self.app.on_before_shutdown.connect(on_shutdown)

    def assignment(self) -> set[TP]:
        """Return the partitions assigned to the worker now; empty before its first assignment."""
        if self.state in (WorkerState.STARTING, WorkerState.STOPPING):
            return set()
        return set(self.app.consumer.assignment())

    def lag(self, tp: TP) -> int | None:
        """Return end offset minus committed offset of `tp`, or None while either is unknown."""
        committed = self.app.monitor.tp_committed_offsets.get(tp)
        try:
            end = self.app.consumer.highwater(tp)
        except Exception:  # the consumer may not know the partition yet
            return None
        if committed is None or end is None:
            return None
        return max(int(end) - int(committed), 0)


class WorkerCollector(Collector):
    """Prometheus metrics of one worker's consumer group membership, read at scrape time."""

    def __init__(self, tracker: WorkerStateTracker) -> None:
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        """Yield readiness, assigned partitions per topic, consumer lag and rebalances."""
        group = str(self._tracker.app.conf.id)
        assignment = self._tracker.assignment()

        ready = GaugeMetricFamily(
            "activity_worker_ready",
            "1 while the worker owns its assignment and processes records, else 0.",
            labels=["consumer_group"],
        )
        ready.add_metric([group], 1.0 if self._tracker.ready else 0.0)
        yield ready

        per_topic: dict[str, int] = {}
        for tp in assignment:
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + 1
        assigned = GaugeMetricFamily(
            "activity_worker_assigned_partitions",
            "Partitions of each topic assigned to this worker.",
            labels=["consumer_group", "topic"],
        )
        for topic, count in sorted(per_topic.items()):
            assigned.add_metric([group, topic], float(count))
        yield assigned

        lag = GaugeMetricFamily(
            "activity_consumer_lag",
            "Records in a partition assigned to this worker that it has not committed yet.",
            labels=["consumer_group", "topic", "partition"],
        )
        for tp in sorted(assignment):
            records = self._tracker.lag(tp)
            if records is not None:
                lag.add_metric([group, tp.topic, str(tp.partition)], float(records))
        yield lag

        rebalances = CounterMetricFamily(
            "activity_worker_rebalances",
            "Rebalances this worker went through since it started.",
            labels=["consumer_group"],
        )
        rebalances.add_metric([group], float(self._tracker.app.rebalancing_count))
        yield rebalances


def install_web_endpoints(app: faust.App) -> WorkerStateTracker:
    """Add `/health`, `/ready` and `/metrics` to the web server of `app`; return its tracker.

    Call it once, right after creating the app and before the worker starts. It also
    binds the web server to `ACTIVITY_WEB_BIND`.
    """
    app.conf.web_bind = WorkerWebSettings().web_bind

    tracker = WorkerStateTracker(app)
    tracker.connect()
    worker_registry = CollectorRegistry(auto_describe=False)
    worker_registry.register(WorkerCollector(tracker))

    async def health(view: web.View, request: web.Request) -> web.Response:
        """Liveness: 200 while the worker runs."""
        crashed = bool(app.crashed)
        body = {"status": "crashed" if crashed else "alive", "state": tracker.state.value}
        return view.json(body, status=HTTP_UNAVAILABLE if crashed else HTTP_OK)

    async def ready(view: web.View, request: web.Request) -> web.Response:
        """Readiness: 200 once the worker owns its assignment."""
        body = {
            "status": "ready" if tracker.ready else "not ready",
            "state": tracker.state.value,
            "assigned_partitions": len(tracker.assignment()),
        }
        return view.json(body, status=HTTP_OK if tracker.ready else HTTP_UNAVAILABLE)

    async def metrics(view: web.View, request: web.Request) -> web.Response:
        """Prometheus text exposition of the process's metrics and the worker's."""
        body = generate_latest(REGISTRY) + generate_latest(worker_registry)
        return view.bytes(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.page(HEALTH_PATH, name="activity_health")(health)
    app.page(READY_PATH, name="activity_ready")(ready)
    app.page(METRICS_PATH, name="activity_metrics")(metrics)
    return tracker
