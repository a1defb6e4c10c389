"""The single exception type of the local stack, raised for every failure a user can act on."""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(Exception):
    """A stack step failed; the message names the values involved and the next step to take."""
