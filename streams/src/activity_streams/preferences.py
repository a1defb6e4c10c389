"""Notification preferences: whether a principal wants to hear of an action.

A principal's own preference wins; without one the tenant's default applies,
and without that the `mutations` mode. Critical actions skip preferences.
Patterns match case-sensitively on every platform (`fnmatchcase`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import translate
from functools import lru_cache

from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "DEFAULT_MUTATION_ACTIONS",
    "DEFAULT_PREFERENCE",
    "MAX_CUSTOM_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "FilterMode",
    "Preference",
    "PreferenceError",
    "effective_preference",
    "matches_any",
    "validate_custom_actions",
    "wants_notification",
]


class FilterMode(StrEnum):
    """How a preference filters actions."""

    MUTED = "muted"
    ALL = "all"
    MUTATIONS = "mutations"
    CUSTOM = "custom"


class PreferenceError(ActivityPipelineError):
    """Raised when a preference to be saved holds an invalid mode or pattern."""


DEFAULT_MUTATION_ACTIONS: tuple[str, ...] = (
    "resource.created",
    "resource.updated",
    "resource.deleted",
    "transfer.*",
    "promotion.*",
)
"""Patterns of the `mutations` mode, which also applies to principals without a preference."""

MAX_CUSTOM_PATTERNS = 50
"""Maximum number of patterns in one custom preference; more points to a client bug."""

MAX_PATTERN_LENGTH = 64
"""Maximum pattern length in characters, equal to the maximum action name length."""

_PATTERN_CHARACTERS = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")


@dataclass(frozen=True)
class Preference:
    """One principal's preference, or a tenant's default, within one tenant."""

    filter_mode: FilterMode
    custom_actions: tuple[str, ...] = ()


DEFAULT_PREFERENCE = Preference(FilterMode.MUTATIONS)


@lru_cache(maxsize=4096)
def _compiled(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """Return one regular expression matching any of `patterns`, or None for no pattern."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{translate(pattern)})" for pattern in patterns))


def matches_any(action: str, patterns: Sequence[str]) -> bool:
    """Return whether `action` matches one of the fnmatch `patterns`, case-sensitively."""
    compiled = _compiled(tuple(patterns))
    return compiled is not None and compiled.match(action) is not None


def effective_preference(own: Preference | None, tenant_default: Preference | None) -> Preference:
    """Return the preference that applies: the principal's, the tenant's, then `mutations`."""
    if own is not None:
        return own
    if tenant_default is not None:
        return tenant_default
    return DEFAULT_PREFERENCE


def wants_notification(
    preference: Preference | None,
    action: str,
    mutation_actions: Sequence[str] = DEFAULT_MUTATION_ACTIONS,
) -> bool:
    """Return whether a principal with `preference` is notified of `action`."""
    effective = preference if preference is not None else DEFAULT_PREFERENCE
    return _wants(effective.filter_mode, effective.custom_actions, action, tuple(mutation_actions))


@lru_cache(maxsize=65_536)
def _wants(
    mode: FilterMode, custom_actions: tuple[str, ...], action: str, mutations: tuple[str, ...]
) -> bool:
    match mode:
        case FilterMode.MUTED:
            return False
        case FilterMode.ALL:
            return True
        case FilterMode.MUTATIONS:
            return matches_any(action, mutations)
        case FilterMode.CUSTOM:
            return matches_any(action, custom_actions)


def validate_custom_actions(patterns: Iterable[str]) -> tuple[str, ...]:
    """Return `patterns` checked for saving; raise `PreferenceError` naming the bad one.

    A pattern is lowercase like an action name, with fnmatch wildcards `*`, `?`
    and `[...]`; matching is case-sensitive, so `Resource.*` could never match.
    """
    checked = tuple(patterns)
    if len(checked) > MAX_CUSTOM_PATTERNS:
        raise PreferenceError(
            f"a custom preference holds {len(checked)} patterns; the maximum is "
            f"{MAX_CUSTOM_PATTERNS}; combine them with wildcards such as `resource.*`"
        )
    for pattern in checked:
        if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
            raise PreferenceError(
                f"pattern {pattern[:80]!r} is {len(pattern)} characters long; "
                f"give 1 to {MAX_PATTERN_LENGTH} characters, e.g. `resource.*`"
            )
        if not _PATTERN_CHARACTERS.match(pattern):
            raise PreferenceError(
                f"pattern {pattern!r} may hold only lowercase letters, digits, '_', '.', '-' "
                "and the wildcards '*', '?', '[...]'; actions are lowercase and matched "
                "case-sensitively"
            )
        if pattern.count("[") != pattern.count("]"):
            raise PreferenceError(
                f"pattern {pattern!r} has an unclosed '[' or ']'; close the character set"
            )
    return checked
