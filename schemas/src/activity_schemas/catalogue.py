"""The action catalogue: every known action name with its category, shipped as data.

`actions.json` beside this module lists the actions; `default_catalogue()`
loads it once. A service that records actions of its own extends it with
`ActionCatalogue.with_actions(...)` and hands the result to the producer
library, which accepts or rejects actions missing from it as configured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from activity_schemas.envelope import check_action_name
from activity_schemas.errors import ActivityPipelineError

__all__ = [
    "DEFAULT_CATALOGUE_FILE",
    "ActionCatalogue",
    "ActionCategory",
    "CatalogueEntry",
    "CatalogueError",
    "default_catalogue",
]

DEFAULT_CATALOGUE_FILE = "actions.json"
"""Name of the catalogue data file inside the `activity_schemas` package."""


class CatalogueError(ActivityPipelineError):
    """Raised when catalogue data is malformed: a bad action name, category or duplicate."""


class ActionCategory(StrEnum):
    """Kind of event an action records. Only a `mutation` changes a resource's stored state."""

    MUTATION = "mutation"
    EXECUTION = "execution"
    OBSERVATION = "observation"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One catalogued action: its name, its category and whether it is critical."""

    action: str
    category: ActionCategory
    critical: bool = False
    """Flag reserved for actions that must always reach people, false unless the data sets it."""

    @property
    def is_mutation(self) -> bool:
        """Whether the action changes a resource's stored state."""
        return self.category is ActionCategory.MUTATION


class ActionCatalogue(Mapping[str, CatalogueEntry]):
    """An immutable mapping from action name to its catalogue entry."""

    def __init__(self, entries: Iterable[CatalogueEntry]) -> None:
        by_action: dict[str, CatalogueEntry] = {}
        for entry in entries:
            _check_entry(entry)
            if entry.action in by_action:
                raise CatalogueError(
                    f"action {entry.action!r} is catalogued twice; keep one entry per action"
                )
            by_action[entry.action] = entry
        self._entries = by_action

    def __getitem__(self, action: str) -> CatalogueEntry:
        return self._entries[action]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ActionCatalogue({len(self._entries)} actions)"

    def category(self, action: str) -> ActionCategory | None:
        """Return the category of `action`, or None when it is not catalogued."""
        entry = self._entries.get(action)
        return entry.category if entry is not None else None

    def is_mutation(self, action: str) -> bool:
        """Return whether `action` is catalogued as a mutation (false for an unknown action)."""
        return self.category(action) is ActionCategory.MUTATION

    def with_actions(
        self, actions: Mapping[str, ActionCategory | str] | Iterable[CatalogueEntry]
    ) -> ActionCatalogue:
        """Return a catalogue with `actions` added, e.g. `{"invoice.paid": "mutation"}`.

        An action already catalogued is replaced by the new entry.
        """
        if isinstance(actions, Mapping):
            added = [
                CatalogueEntry(action, _category(action, category))
                for action, category in actions.items()
            ]
        else:
            added = list(actions)
        merged = dict(self._entries)
        merged.update({entry.action: entry for entry in added})
        return ActionCatalogue(merged.values())

    @classmethod
    def from_json(cls, text: str, source: str = "<string>") -> ActionCatalogue:
        """Parse catalogue data: `{"actions": {"<action>": {"category": ..., "critical": ...}}}`."""
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except (ValueError, CatalogueError) as exc:
            raise CatalogueError(f"catalogue {source} is not valid: {exc}") from exc

        actions = document.get("actions") if isinstance(document, dict) else None
        if not isinstance(actions, dict):
            raise CatalogueError(
                f'catalogue {source} has no "actions" object; '
                'write {"actions": {"signal.created": {"category": "mutation"}}}'
            )
        return cls(_entry(action, fields, source) for action, fields in actions.items())

    @classmethod
    def from_file(cls, path: Path) -> ActionCatalogue:
        """Load catalogue data from a JSON file shaped like the shipped `actions.json`."""
        return cls.from_json(path.read_text(encoding="utf-8"), str(path))


@cache
def default_catalogue() -> ActionCatalogue:
    """Return the shipped catalogue of actions, loaded once per process."""
    data = files("activity_schemas").joinpath(DEFAULT_CATALOGUE_FILE).read_text(encoding="utf-8")
    return ActionCatalogue.from_json(data, DEFAULT_CATALOGUE_FILE)


def _check_entry(entry: CatalogueEntry) -> None:
    try:
        check_action_name(entry.action)
    except ValueError as exc:
        raise CatalogueError(f"catalogue entry is invalid: {exc}") from exc
    if not isinstance(entry.category, ActionCategory):
        raise CatalogueError(
            f"action {entry.action!r} has category {entry.category!r}; use an ActionCategory"
        )


def _category(action: str, value: ActionCategory | str) -> ActionCategory:
    try:
        return ActionCategory(value)
    except ValueError as exc:
        known = ", ".join(category.value for category in ActionCategory)
        raise CatalogueError(
            f"action {action!r} has the unknown category {value!r}; use one of {known}"
        ) from exc


def _entry(action: str, fields: Any, source: str) -> CatalogueEntry:
    if not isinstance(fields, dict) or "category" not in fields:
        raise CatalogueError(
            f'action {action!r} in catalogue {source} needs an object with a "category"'
        )
    unknown = sorted(set(fields) - {"category", "critical", "description"})
    if unknown:
        raise CatalogueError(
            f"action {action!r} in catalogue {source} has unknown fields {unknown}; "
            "allowed are category, critical and description"
        )
    critical = fields.get("critical", False)
    if not isinstance(critical, bool):
        raise CatalogueError(
            f"action {action!r} in catalogue {source} has critical={critical!r}; use true or false"
        )
    return CatalogueEntry(action, _category(action, fields["category"]), critical)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise CatalogueError(f"keys {repeated} appear more than once in one object")
    return dict(pairs)
