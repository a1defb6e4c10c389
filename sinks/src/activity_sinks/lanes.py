"""Per-partition lanes: each partition's events are processed in offset order and acknowledged.

The publishing agent reads its topic without automatic acknowledgements and
hands each event to the lane of its partition. A lane has at most one batch
in flight and acknowledges its events in offset order once the batch was
handled, so Faust commits an offset only once its event was handled.

Lanes share their batches while they are healthy. Whenever no shared batch
is in flight, one shared batch takes what every idle lane contains (up to one
batch in all) and is processed with one call. So the database and Centrifugo
see a few large batches instead of many small ones. A shared batch that takes
longer than `SPLIT_AFTER_S`, or fails, is cancelled and split: each of its
lanes processes its own part again, alone, and idempotency keys absorb what
had gone through. A slow partition (Centrifugo retries, a database stall)
therefore holds back the others at most `SPLIT_AFTER_S` at a time. Then it
runs alone until one of its batches is fast again.

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
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any

import faust
import structlog
from activity_streams.acks import release_for_redelivery
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
    "SHARED_BATCH_SPLITS",
    "SPLIT_AFTER_S",
    "BatchFinisher",
    "BatchProcessor",
    "LaneMode",
    "LaneState",
    "LanesState",
    "PartitionLane",
    "PartitionLanes",
    "RebalanceSensor",
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

SPLIT_AFTER_S = 10.0
"""Time after which a shared batch is cancelled and split into one batch per lane, in seconds.
A shared batch of 500 deliveries took up to 4.3 s in the demo on a loaded 2-core machine with
debug logs on, so a healthy batch is not split. A stalled partition then holds back the others
for at most 10 s, not for the whole Centrifugo retry budget (120 s)."""

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
SHARED_BATCH_SPLITS = Counter(
    "activity_sink_shared_batch_splits_total",
    "Shared batches that were slow or failed and were split into one batch per lane.",
)

BatchProcessor = Callable[[Sequence[EventT[Any]]], Awaitable[Any]]
"""Processor of a batch of events of one or more partitions, returning what `BatchFinisher`
takes. It may be cancelled and called again with part of the batch, so it must be idempotent."""

BatchFinisher = Callable[[Any], Awaitable[None]]
"""Finisher that produces the outcome of a processed batch (receipts, dead letters). A split
does not cancel it, so it produces each processed batch's outcome once."""

Acknowledger = Callable[[EventT[Any]], Awaitable[bool]]
"""Acknowledger of one event to Faust (`Stream.ack`), so that its offset may be committed."""


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


class LaneMode(StrEnum):
    """Processing mode of a lane's batches."""

    SHARED = "shared"
    """The lane's batches join the shared batches of the idle lanes."""
    ALONE = "alone"
    """A shared batch with this lane was slow or failed: the lane processes its own batches
    until one of them is fast again."""


_MODE_TRANSITIONS: dict[LaneMode, frozenset[LaneMode]] = {
    LaneMode.SHARED: frozenset({LaneMode.ALONE}),
    LaneMode.ALONE: frozenset({LaneMode.SHARED}),
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
    """The queue of one partition and its batch in flight, acknowledged after handling."""

    def __init__(
        self, tp: TP, consumer: ConsumerT, batch_size: int, wake: Callable[[], None]
    ) -> None:
        self.tp = tp
        self.state = LaneState.FLOWING
        self.mode = LaneMode.SHARED
        self._consumer = consumer
        self._batch_size = batch_size
        self._wake = wake
        self._queue: deque[EventT[Any]] = deque()
        self._in_flight: list[EventT[Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._labels = {"topic": tp.topic, "partition": str(tp.partition)}
        self._backlog_gauge = LANE_BACKLOG.labels(**self._labels)

    @property
    def ready_to_share(self) -> bool:
        """Whether the lane may join the next shared batch: it has events and none in flight."""
        return (
            self.state is not LaneState.STOPPED
            and self.mode is LaneMode.SHARED
            and not self._in_flight
            and bool(self._queue)
        )

    def put(self, event: EventT[Any]) -> None:
        """Queue one event; pause the partition when the backlog reached the pause mark."""
        self._queue.append(event)
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
        if self.mode is LaneMode.SHARED:
            self._wake()

    def take(self, limit: int) -> list[EventT[Any]]:
        """Take up to `limit` queued events (at most one batch) as the lane's batch in flight."""
        size = min(self._batch_size, limit, len(self._queue))
        self._in_flight = [self._queue.popleft() for _ in range(size)]
        self._backlog_gauge.set(len(self._queue))
        self._maybe_resume()
        return self._in_flight

    async def acknowledge(self, ack: Acknowledger) -> None:
        """Acknowledge the batch in flight in offset order; the lane may take the next one."""
        for event in self._in_flight:
            await ack(event)
        self._in_flight = []

    def go_alone(self, process: BatchProcessor, finish: BatchFinisher, ack: Acknowledger) -> None:
        """Process the batch in flight again, alone, and the following ones until one is fast."""
        self._move_mode(LaneMode.ALONE)
        self._task = asyncio.get_running_loop().create_task(
            self._run_alone(process, finish, ack),
            name=f"lane-{self.tp.topic}-{self.tp.partition}",
        )

    def cancel(self) -> None:
        """Stop the lane now and drop its queue; unacknowledged events are read again later."""
        if self.state is LaneState.STOPPED:
            return
        self._move_to(LaneState.STOPPED)
        release_for_redelivery([*self._in_flight, *self._queue])
        self._in_flight = []
        self._queue.clear()
        with contextlib.suppress(KeyError):
            LANE_BACKLOG.remove(*self._labels.values())
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the lane and wait until its task, if any, has ended."""
        self.cancel()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _move_to(self, target: LaneState) -> None:
        if target not in _LANE_TRANSITIONS[self.state]:
            log.debug("partition_lane_state_ignored", state=self.state.value, target=target.value)
            return
        self.state = target

    def _move_mode(self, target: LaneMode) -> None:
        if target not in _MODE_TRANSITIONS[self.mode]:
            log.debug("partition_lane_mode_ignored", mode=self.mode.value, target=target.value)
            return
        self.mode = target

    async def _run_alone(
        self, process: BatchProcessor, finish: BatchFinisher, ack: Acknowledger
    ) -> None:
        while True:
            started = time.monotonic()

            await self._handle_until_done(process, finish)
            await self.acknowledge(ack)

            fast = time.monotonic() - started < SPLIT_AFTER_S
            if fast or not self._queue:
                break
            self.take(self._batch_size)

        self._task = None
        self._move_mode(LaneMode.SHARED)
        log.info("partition_lane_shares_again", topic=self.tp.topic, partition=self.tp.partition)
        self._wake()

    async def _handle_until_done(self, process: BatchProcessor, finish: BatchFinisher) -> None:
        """Handle the batch, trying again after any failure, so its events are never acked early."""
        batch = self._in_flight
        attempt = 0
        while True:
            try:
                await finish(await process(batch))
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


class RebalanceSensor(Sensor):
    """Sensor that notifies the registered lanes when a rebalance starts.

    It acts as early as Faust detects the rebalance.

    Faust calls `on_rebalance_start` from its consumer thread before it waits for
    every unacknowledged event. The lanes are notified on their own event loop.
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
    """Routes an agent's events to one lane per partition, shares the idle lanes' batches, and
    stops the lanes on rebalances."""

    def __init__(
        self,
        app: faust.App,
        sensor: RebalanceSensor,
        process: BatchProcessor,
        finish: BatchFinisher,
        ack: Acknowledger,
        batch_size: int,
    ) -> None:
        self.state = LanesState.OPEN
        self._app = app
        self._sensor = sensor
        self._process = process
        self._finish = finish
        self._ack = ack
        self._batch_size = batch_size
        self._lanes: dict[TP, PartitionLane] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._shared: asyncio.Task[None] | None = None
        self._first_lane = 0

    async def start(self) -> None:
        """Follow the app's rebalances and start sharing batches; events may be dispatched now."""
        self._loop = asyncio.get_running_loop()
        self._sensor.register(self)
        self._app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self._app.on_partitions_assigned.connect(self._on_partitions_assigned)
        self._scheduler = self._loop.create_task(self._share_batches(), name="lanes-scheduler")
        log.info("partition_lanes_started", batch_size=self._batch_size)

    async def stop(self) -> None:
        """Stop every lane and wait for them; unacknowledged events are read again later."""
        self._move_to(LanesState.STOPPED)
        self._sensor.unregister(self)
        self._app.on_partitions_revoked.disconnect(self._on_partitions_revoked)
        self._app.on_partitions_assigned.disconnect(self._on_partitions_assigned)
        tasks = [task for task in (self._scheduler, self._shared) if task is not None]
        self._scheduler = self._shared = None
        for task in tasks:
            task.cancel()
        lanes = list(self._lanes.values())
        self._lanes.clear()
        await asyncio.gather(*tasks, *(lane.stop() for lane in lanes), return_exceptions=True)
        log.info("partition_lanes_stopped", lanes=len(lanes))

    def dispatch(self, events: Iterable[EventT[Any]]) -> int:
        """Queue each event in its partition's lane, without waiting; return how many were queued.

        Events are dropped unacknowledged while a rebalance is under way, and so are
        events fetched under an older consumer generation: the partition's owner reads
        them again from the committed offset.
        """
        if self.state is not LanesState.OPEN:
            release_for_redelivery(events)
            log.debug("events_dropped_for_redelivery", state=self.state.value)
            return 0
        generation = self._app.consumer_generation_id
        queued = 0
        for event in events:
            message = event.message
            if message.generation_id != generation:
                release_for_redelivery([event])
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
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.cancel()
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for lane in lanes:
            lane.cancel()
        log.info("partition_lanes_suspended", lanes=len(lanes), reason="rebalance started")

    def _open_lane(self, tp: TP) -> PartitionLane:
        lane = PartitionLane(tp, self._app.consumer, self._batch_size, self._wake.set)
        self._lanes[tp] = lane
        log.debug("partition_lane_opened", topic=tp.topic, partition=tp.partition)
        return lane

    def _move_to(self, target: LanesState) -> None:
        if target not in _LANES_TRANSITIONS[self.state]:
            log.debug("partition_lanes_state_ignored", state=self.state.value, target=target.value)
            return
        self.state = target

    async def _share_batches(self) -> None:
        """Start a shared batch whenever none is in flight and an idle lane contains events."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._shared is not None or self.state is not LanesState.OPEN:
                continue

            parts = self._take_shared()
            if parts:
                self._shared = asyncio.get_running_loop().create_task(
                    self._run_shared(parts), name="lanes-shared-batch"
                )

    def _take_shared(self) -> list[tuple[PartitionLane, list[EventT[Any]]]]:
        """Take up to one batch in all from the idle lanes, starting at another lane each time."""
        lanes = list(self._lanes.values())
        self._first_lane = (self._first_lane + 1) % max(1, len(lanes))
        lanes = lanes[self._first_lane :] + lanes[: self._first_lane]
        room = self._batch_size
        parts = []
        for lane in lanes:
            if room == 0:
                break
            if lane.ready_to_share:
                part_events = lane.take(room)
                room -= len(part_events)
                parts.append((lane, part_events))
        return parts

    async def _run_shared(self, parts: list[tuple[PartitionLane, list[EventT[Any]]]]) -> None:
        """Process the lanes' batches with one call; split them when that is slow or fails."""
        events = [event for _, part_events in parts for event in part_events]
        try:
            try:
                outcome = await asyncio.wait_for(self._process(events), SPLIT_AFTER_S)
                await self._finish(outcome)
            except Exception as exc:
                self._split(parts, exc)
                return

            for lane, _ in parts:
                await lane.acknowledge(self._ack)
        finally:
            if self._shared is asyncio.current_task():
                self._shared = None
            self._wake.set()

    def _split(self, parts: list[tuple[PartitionLane, list[EventT[Any]]]], exc: Exception) -> None:
        """Let every lane of a slow or failed shared batch process its part alone."""
        SHARED_BATCH_SPLITS.inc()
        log.warning(
            "shared_batch_split",
            partitions=[lane.tp.partition for lane, _ in parts],
            events=sum(len(part_events) for _, part_events in parts),
            error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            consequence="each partition processes its part alone; a slow one holds back no other",
        )
        for lane, _ in parts:
            if lane.state is not LaneState.STOPPED:
                lane.go_alone(self._process, self._finish, self._ack)

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
