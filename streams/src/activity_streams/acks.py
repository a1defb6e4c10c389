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

from typing import Any

import faust
from faust.types import EventT

__all__ = ["ack_if_current"]


async def ack_if_current(app: faust.App, stream: faust.StreamT[Any], event: EventT[Any]) -> bool:
    """Ack `event` if it was fetched in the current consumer generation; return whether it was."""
    if event.message.generation_id != app.consumer_generation_id:
        event.message.acked = True
        return False
    await stream.ack(event)
    return True
