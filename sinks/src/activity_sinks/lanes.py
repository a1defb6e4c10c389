"""Per-partition lanes: each partition's events are processed in offset order by a task of its own.

The publishing agent reads its topic without automatic acknowledgements and
hands each event to the lane of its partition. A lane takes what is queued, up
to one batch, processes it, then acknowledges its events in offset order, so
Faust commits an offset only once its event was handled. A slow partition
(Centrifugo retries, a database stall) therefore delays only its own lane.

A lane never blocks the agent: when its backlog reaches `PAUSE_BATCHES`
batches, fetching from its partition is paused, and resumed once the backlog
is down to `RESUME_BATCHES`. When a rebalance starts, every lane is cancelled
and its queued events dropped unacknowledged, so the rebalance never waits for
a slow partition; the partition's next owner (maybe this worker again) reads
them from the committed offset, and idempotency keys absorb the repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

import faust
import structlog
from faust.sensors import Sensor
from faust.types import TP, AppT, ConsumerT, EventT
from prometheus_client import Counter, Gauge

__all__ = [
    "LANE_BACKLOG",
    "LANE_RETRY_FIRST_DELAY_S",
    "LANE_RETRY_MAX_DELAY_S",
    "PARTITION_PAUSES",
    "PAUSE_BATCHES",
    "RESUME_BATCHES",
    "LaneState",
    "LanesState",
    "PartitionLane",
    "PartitionLanes",
    "RebalanceSensor",
    "release_unacknowledged",
]

log = structlog.get_logger(__name__)

PAUSE_BATCHES = 2
"""Backlog, in batches, at which a lane pauses its partition: the next batch is ready the
moment the current one ends, while a stalled partition keeps at most two batches in memory
(plus what Faust had already fetched)."""

RESUME_BATCHES = 1
"""Backlog, in batches, at or below which a paused partition is fetched again: the fetch
refills the lane while it still works through one batch."""

LANE_RETRY_FIRST_DELAY_S = 0.2
"""Wait before a lane processes a failed batch again, in seconds; it doubles on each failure."""

LANE_RETRY_MAX_DELAY_S = 5.0
"""Maximum wait between two tries of a failed batch, in seconds, so a recovered dependency is
used within 5 s."""

LANE_BACKLOG = Gauge(
    "activity_sink_lane_backlog",
    "Events queued in a partition's lane and not yet taken into a batch.",
    ["topic", "partition"],
)
PARTITION_PAUSES = Counter(
    "activity_sink_partition_pauses_total",
    "Times fetching from a partition was paused because its lane was full.",
    ["topic", "partition"],
)

BatchHandler = Callable[[Sequence[EventT[Any]]], Awaitable[None]]
"""Processes one batch of a partition's events; raising makes the lane try the batch again."""

Acknowledger = Callable[[EventT[Any]], Awaitable[bool]]
"""Acknowledges one event to Faust (`Stream.ack`), so that its offset may be committed."""


def release_unacknowledged(events: Iterable[EventT[Any]]) -> None:
    """Let Faust stop waiting for events that will be read again instead of acknowledged.

    When a rebalance starts, Faust waits until every event it handed out was acknowledged
    or garbage-collected, but its stream keeps a reference to the last message it read.
    Marking a dropped event's message as acknowledged ends that wait without acknowledging
    it to the consumer: its offset is not committed, so the partition's owner reads it again.
    """
    for event in events:
        event.message.acked = True


class LaneState(StrEnum):
    """Life-cycle state of one partition's lane."""

    FLOWING = "flowing"
    """The partition is fetched; the backlog is below the pause mark."""
    PAUSED = "paused"
    """Fetching from the partition is paused until the backlog drains."""
    STOPPED = "stopped"
    """The lane was cancelled; its unacknowledged events will be read again."""


_LANE_TRANSITIONS: dict[LaneState, frozenset[LaneState]] = {
    LaneState.FLOWING: frozenset({LaneState.PAUSED, LaneState.STOPPED}),
    LaneState.PAUSED: frozenset({LaneState.FLOWING, LaneState.STOPPED}),
    LaneState.STOPPED: frozenset(),
}


class LanesState(StrEnum):
    """Life-cycle state of the lanes of one agent."""

    OPEN = "open"
    """Events are routed to the lanes of their partitions."""
    SUSPENDED = "suspended"
    """A rebalance started: the lanes are gone and arriving events are dropped unacknowledged."""
    STOPPED = "stopped"
    """The agent stops; no lane runs any more."""


_LANES_TRANSITIONS: dict[LanesState, frozenset[LanesState]] = {
    LanesState.OPEN: frozenset({LanesState.OPEN, LanesState.SUSPENDED, LanesState.STOPPED}),
    LanesState.SUSPENDED: frozenset({LanesState.OPEN, LanesState.SUSPENDED, LanesState.STOPPED}),
    LanesState.STOPPED: frozenset(),
}


class PartitionLane:
    """The queue and task of one partition: batches in offset order, acknowledged after handling."""

    def __init__(
        self,
        tp: TP,
        handle: BatchHandler,
        ack: Acknowledger,
        consumer: ConsumerT,
        batch_size: int,
    ) -> None:
        self.tp = tp
        self.state = LaneState.FLOWING
        self._handle = handle
        self._ack = ack
        self._consumer = consumer
        self._batch_size = batch_size
        self._queue: deque[EventT[Any]] = deque()
        self._in_flight: list[EventT[Any]] = []
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._labels = {"topic": tp.topic, "partition": str(tp.partition)}
        self._backlog_gauge = LANE_BACKLOG.labels(**self._labels)

    def start(self) -> None:
        """Start the lane's task."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"lane-{self.tp.topic}-{self.tp.partition}"
        )

    def put(self, event: EventT[Any]) -> None:
        """Queue one event; pause the partition when the backlog reached the pause mark."""
        self._queue.append(event)
        self._queued.set()
        self._backlog_gauge.set(len(self._queue))
        if len(self._queue) >= PAUSE_BATCHES * self._batch_size:
            # Repeated while full: Faust's own buffer handling may have resumed the partition.
            self._consumer.pause_partitions({self.tp})
            if self.state is LaneState.FLOWING:
                self._move_to(LaneState.PAUSED)
                PARTITION_PAUSES.labels(**self._labels).inc()
                log.info(
                    "partition_paused",
                    topic=self.tp.topic,
                    partition=self.tp.partition,
                    backlog=len(self._queue),
                )

    def cancel(self) -> None:
        """Stop the lane now and drop its queue; unacknowledged events are read again later."""
        if self.state is LaneState.STOPPED:
            return
        self._move_to(LaneState.STOPPED)
        release_unacknowledged([*self._in_flight, *self._queue])
        self._in_flight = []
        self._queue.clear()
        with contextlib.suppress(KeyError):
            LANE_BACKLOG.remove(*self._labels.values())
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the lane and wait until its task has ended."""
        self.cancel()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _move_to(self, target: LaneState) -> None:
        if target not in _LANE_TRANSITIONS[self.state]:
            log.debug("partition_lane_state_ignored", state=self.state.value, target=target.value)
            return
        self.state = target

    async def _run(self) -> None:
        while True:
            await self._queued.wait()

            self._in_flight = self._take()
            self._maybe_resume()

            await self._handle_until_done(self._in_flight)

            for event in self._in_flight:
                await self._ack(event)
            self._in_flight = []

    def _take(self) -> list[EventT[Any]]:
        size = min(self._batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(size)]
        if not self._queue:
            self._queued.clear()
        self._backlog_gauge.set(len(self._queue))
        return batch

    def _maybe_resume(self) -> None:
        if self.state is LaneState.PAUSED and len(self._queue) <= RESUME_BATCHES * self._batch_size:
            self._move_to(LaneState.FLOWING)
            self._consumer.resume_partitions({self.tp})
            log.info(
                "partition_resumed",
                topic=self.tp.topic,
                partition=self.tp.partition,
                backlog=len(self._queue),
            )

    async def _handle_until_done(self, batch: list[EventT[Any]]) -> None:
        """Handle the batch, trying again after any failure, so its events are never acked early."""
        attempt = 0
        while True:
            try:
                await self._handle(batch)
                return
            except Exception as exc:
                attempt += 1
                delay = min(LANE_RETRY_MAX_DELAY_S, LANE_RETRY_FIRST_DELAY_S * 2 ** (attempt - 1))
                log.error(
                    "partition_lane_batch_failed",
                    topic=self.tp.topic,
                    partition=self.tp.partition,
                    first_offset=batch[0].message.offset,
                    events=len(batch),
                    attempt=attempt,
                    delay_s=delay,
                    error=f"{type(exc).__name__}: {exc}",
                    consequence="the batch is handled again; this partition waits, the others "
                    "flow on",
                    exc_info=attempt == 1,
                )
                await asyncio.sleep(delay)


class RebalanceSensor(Sensor):
    """Tells the registered lanes that a rebalance started, as early as Faust detects it.

    Faust calls `on_rebalance_start` from its consumer thread before it waits for
    every unacknowledged event; the lanes are told on their own event loop.
    Add one instance to `app.sensors` before the worker starts.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listeners: tuple[PartitionLanes, ...] = ()

    def register(self, lanes: PartitionLanes) -> None:
        """Tell `lanes` about every rebalance from now on."""
        self._listeners = (*self._listeners, lanes)

    def unregister(self, lanes: PartitionLanes) -> None:
        """Stop telling `lanes` about rebalances."""
        self._listeners = tuple(known for known in self._listeners if known is not lanes)

    def on_rebalance_start(self, app: AppT) -> dict[str, Any]:
        """Suspend every registered set of lanes; called from Faust's consumer thread."""
        for lanes in self._listeners:
            lanes.suspend_threadsafe()
        return super().on_rebalance_start(app)


class PartitionLanes:
    """Routes an agent's events to one lane per partition and stops the lanes on rebalances."""

    def __init__(
        self,
        app: faust.App,
        sensor: RebalanceSensor,
        handle: BatchHandler,
        ack: Acknowledger,
        batch_size: int,
    ) -> None:
        self.state = LanesState.OPEN
        self._app = app
        self._sensor = sensor
        self._handle = handle
        self._ack = ack
        self._batch_size = batch_size
        self._lanes: dict[TP, PartitionLane] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Follow the app's rebalances; events may be dispatched from now on."""
        self._loop = asyncio.get_running_loop()
        self._sensor.register(self)
        self._app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self._app.on_partitions_assigned.connect(self._on_partitions_assigned)
        log.info("partition_lanes_started", batch_size=self._batch_size)

    async def stop(self) -> None:
        """Stop every lane and wait for them; unacknowledged events are read again later."""
        self._move_to(LanesState.STOPPED)
        self._sensor.unregister(self)
        self._app.on_partitions_revoked.disconnect(self._on_partitions_revoked)
        self._app.on_partitions_assigned.disconnect(self._on_partitions_assigned)
        lanes = list(self._lanes.values())
        self._lanes.clear()
        await asyncio.gather(*(lane.stop() for lane in lanes))
        log.info("partition_lanes_stopped", lanes=len(lanes))

    def dispatch(self, events: Iterable[EventT[Any]]) -> int:
        """Queue each event in its partition's lane, without waiting; return how many were queued.

        Events are dropped unacknowledged while a rebalance is under way, and so are
        events fetched under an older consumer generation: the partition's owner reads
        them again from the committed offset.
        """
        if self.state is not LanesState.OPEN:
            release_unacknowledged(events)
            log.debug("events_dropped_for_redelivery", state=self.state.value)
            return 0
        generation = self._app.consumer_generation_id
        queued = 0
        for event in events:
            message = event.message
            if message.generation_id != generation:
                release_unacknowledged([event])
                continue
            # Faust's own TP type: the message's may be the Kafka client's, which
            # `resume_partitions` would put into the active set unconverted.
            tp = TP(message.topic, message.partition)
            lane = self._lanes.get(tp)
            if lane is None:
                lane = self._open_lane(tp)
            lane.put(event)
            queued += 1
        return queued

    def suspend_threadsafe(self) -> None:
        """Ask the event loop to `suspend()`; safe to call from any thread."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the worker is stopping
            self._loop.call_soon_threadsafe(self.suspend)

    def suspend(self) -> None:
        """Cancel every lane and drop events until the next assignment (a rebalance started)."""
        if self.state is LanesState.STOPPED:
            return
        self._move_to(LanesState.SUSPENDED)
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for lane in lanes:
            lane.cancel()
        log.info("partition_lanes_suspended", lanes=len(lanes), reason="rebalance started")

    def _open_lane(self, tp: TP) -> PartitionLane:
        lane = PartitionLane(tp, self._handle, self._ack, self._app.consumer, self._batch_size)
        self._lanes[tp] = lane
        lane.start()
        log.debug("partition_lane_opened", topic=tp.topic, partition=tp.partition)
        return lane

    def _move_to(self, target: LanesState) -> None:
        if target not in _LANES_TRANSITIONS[self.state]:
            log.debug("partition_lanes_state_ignored", state=self.state.value, target=target.value)
            return
        self.state = target

    async def _on_partitions_revoked(
        self, sender: Any, revoked: set[TP], *, signal: Any = None, **_: Any
    ) -> None:
        """Stop the lanes of revoked partitions (normally gone since the rebalance started)."""
        lanes = [self._lanes.pop(tp) for tp in revoked if tp in self._lanes]
        await asyncio.gather(*(lane.stop() for lane in lanes))

    async def _on_partitions_assigned(
        self, sender: Any, assigned: set[TP], *, signal: Any = None, **_: Any
    ) -> None:
        """Route events again: those fetched from now on belong to the new assignment."""
        self._move_to(LanesState.OPEN)
