"""Acknowledging events to Faust only within the consumer generation that fetched them.

An agent that acks events after they are handled (with `noack_take`) can
finish a batch after a rebalance. Faust's commit then counts an offset of the
old generation as handled in the new one: with nothing committed yet on the
partition, it commits past events that the new generation has not handled.
So an event of an older generation is not acked. It is only marked as
released, so that Faust does not wait for it at the next rebalance, and the
partition's owner reads it again from the committed offset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import faust
from faust.types import EventT

__all__ = ["ack_if_current", "release_for_redelivery"]


def release_for_redelivery(events: Iterable[EventT[Any]]) -> None:
    """Let Faust stop waiting for events that will be read again instead of acked.

    When a rebalance starts, Faust waits until every event it handed out was acked or
    garbage-collected. Marking the message as acked ends that wait without acking it to
    the consumer, so its offset is not committed and the partition's owner reads it again.
    """
    for event in events:
        event.message.acked = True


async def ack_if_current(app: faust.App, stream: faust.StreamT[Any], event: EventT[Any]) -> bool:
    """Ack `event` if it was fetched in the current consumer generation; return whether it was."""
    if event.message.generation_id != app.consumer_generation_id:
        release_for_redelivery([event])
        return False

    await stream.ack(event)
    return True
