"""Notification preferences: whether a principal wants to hear of an action."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

__all__ = ["DEFAULT_MUTATION_ACTIONS", "FilterMode", "Preference", "wants_notification"]


class FilterMode(StrEnum):
    """How a preference filters actions."""

    MUTED = "muted"
    ALL = "all"
    MUTATIONS = "mutations"
    CUSTOM = "custom"


DEFAULT_MUTATION_ACTIONS: tuple[str, ...] = (
    "resource.created",
    "resource.updated",
    "resource.deleted",
    "transfer.*",
    "promotion.*",
)
"""Patterns of the `mutations` mode, which also applies to principals without a preference."""


@dataclass(frozen=True)
class Preference:
    """One principal's preference within one tenant."""

    filter_mode: FilterMode
    custom_actions: tuple[str, ...] = ()


DEFAULT_PREFERENCE = Preference(FilterMode.MUTATIONS)


def wants_notification(
    preference: Preference | None,
    action: str,
    mutation_actions: Sequence[str] = DEFAULT_MUTATION_ACTIONS,
) -> bool:
    """Return whether a principal with `preference` is notified of `action`.

    Patterns match case-sensitively on every platform (`fnmatchcase`).
    """
    effective = preference if preference is not None else DEFAULT_PREFERENCE
    match effective.filter_mode:
        case FilterMode.MUTED:
            return False
        case FilterMode.ALL:
            return True
        case FilterMode.MUTATIONS:
            return any(fnmatchcase(action, pattern) for pattern in mutation_actions)
        case FilterMode.CUSTOM:
            return any(fnmatchcase(action, pattern) for pattern in effective.custom_actions)
