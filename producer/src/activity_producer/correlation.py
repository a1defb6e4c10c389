"""A context manager that gives every activity of one workflow the same correlation id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID, uuid4

from activity_schemas.correlation import CORRELATION_ID

__all__ = ["active_correlation_id", "correlation"]


@contextmanager
def correlation(correlation_id: UUID | None = None) -> Iterator[UUID]:
    """Set the correlation id for envelopes built inside the block and yield it.

    Without an argument a new id is made. An envelope that names its own
    `correlation_id` keeps it. Blocks nest: the inner id applies inside, and
    the outer one again after it. Tasks started inside the block inherit the
    id, as they inherit every context variable.
    """
    active = correlation_id if correlation_id is not None else uuid4()
    token = CORRELATION_ID.set(active)
    try:
        yield active
    finally:
        CORRELATION_ID.reset(token)


def active_correlation_id() -> UUID | None:
    """Return the correlation id of the enclosing `correlation()` block, or None outside one."""
    return CORRELATION_ID.get()
