"""A context manager that gives every activity of one workflow the same correlation id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID, uuid4

from activity_schemas.correlation import CORRELATION_ID

__all__ = ["correlation"]


@contextmanager
def correlation(correlation_id: UUID | None = None) -> Iterator[UUID]:
    """Set the correlation id for envelopes built inside the block and yield it.

    An envelope that names its own `correlation_id` keeps it. Blocks nest: the
    inner id applies inside, and the outer one again after it.
    """
    active = correlation_id if correlation_id is not None else uuid4()
    token = CORRELATION_ID.set(active)
    try:
        yield active
    finally:
        CORRELATION_ID.reset(token)
