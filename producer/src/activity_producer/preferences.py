"""Notification preferences as library calls: read one, and update it with its activity.

A preference sets how much one principal hears of within one tenant:
`all`, `mutations` (the default), `custom` fnmatch patterns, or `muted`.
Patterns are validated when saved, so a preference that can never match is
refused instead of silently muting its owner.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from activity_schemas import ActivityEnvelope, DeliveryChannel, Visibility
from activity_schemas.envelope import ACTION_MAX_LENGTH
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from activity_producer.errors import ProducerError
from activity_producer.recording import (
    RecordedActivity,
    record_activity_with_outbox,
    record_activity_with_outbox_sync,
)

__all__ = [
    "CUSTOM_PATTERNS_MAX",
    "PATTERN_REGEX",
    "PREFERENCE_UPDATED",
    "FilterMode",
    "InvalidPreferenceError",
    "PreferenceChange",
    "PreferenceError",
    "PreferenceUpdate",
    "StoredPreference",
    "get_preference",
    "get_preference_sync",
    "preference_resource_id",
    "update_preference",
    "update_preference_sync",
]

PREFERENCE_UPDATED = "preference.updated"
"""Action recorded when a principal changes its notification preference."""

CUSTOM_PATTERNS_MAX = 50
"""Maximum number of custom patterns in one preference; more is a mistake, not a filter."""

PATTERN_MAX_LENGTH = ACTION_MAX_LENGTH
"""Maximum length of a custom pattern, in characters; a longer one cannot match any action."""

_PATTERN_CHARACTERS = re.compile(r"^[a-z0-9_.*?\[\]!-]+$")
PATTERN_REGEX = r"^(?:[a-z0-9_.*?]|\[!?[a-z0-9_.-]+\])+$"
"""Regular expression of a valid custom pattern: action characters, `*`, `?`, closed sets."""
_PATTERN = re.compile(PATTERN_REGEX)

_PREFERENCE_NAMESPACE = UUID("6f1d2c3e-8a4b-5c6d-9e0f-1a2b3c4d5e6f")
"""Namespace of the stable resource id that a principal's preference is recorded under."""


class FilterMode(StrEnum):
    """Filter mode of a preference; the values of `notification_preferences.filter_mode`."""

    MUTED = "muted"
    ALL = "all"
    MUTATIONS = "mutations"
    CUSTOM = "custom"


DEFAULT_FILTER_MODE = FilterMode.MUTATIONS
"""Mode of a principal that never saved a preference."""


class PreferenceError(ProducerError):
    """Raised when a notification preference cannot be read or changed."""


class InvalidPreferenceError(PreferenceError):
    """Raised when a preference update breaks a rule: unknown mode, bad or missing patterns."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _check_pattern(pattern: str) -> str:
    if not pattern:
        raise ValueError("pattern is empty; give an action name or a pattern such as `resource.*`")
    if len(pattern) > PATTERN_MAX_LENGTH:
        raise ValueError(
            f"pattern {pattern!r} is {len(pattern)} characters long; "
            f"the maximum is {PATTERN_MAX_LENGTH}"
        )
    if not _PATTERN_CHARACTERS.match(pattern):
        raise ValueError(
            f"pattern {pattern!r} can never match: action names are lowercase letters, digits, "
            "underscores and dots, and patterns add only `*`, `?` and `[...]`"
        )
    if not _PATTERN.match(pattern):
        raise ValueError(
            f"pattern {pattern!r} has an unbalanced or misplaced `[`, `]`, `!` or `-`; "
            "use them only in a closed set, e.g. `chat.[ab]*` or `chat.[!x]*`"
        )
    return pattern


class PreferenceUpdate(BaseModel):
    """A principal's new preference: the filter mode, and the patterns of the `custom` mode."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"filter_mode": {"const": "custom"}}},
            "then": {
                "properties": {"custom_actions": {"minItems": 1}},
                "required": ["custom_actions"],
            },
        },
    )

    filter_mode: FilterMode = Field(
        description=(
            "`all`: every action; `mutations`: created, updated and deleted resources, "
            "transfers and promotions; `custom`: actions matching `custom_actions`; "
            "`muted`: nothing."
        )
    )
    custom_actions: list[str] = Field(
        default_factory=list,
        max_length=CUSTOM_PATTERNS_MAX,
        validate_default=True,
        json_schema_extra={
            "items": {
                "type": "string",
                "minLength": 1,
                "maxLength": PATTERN_MAX_LENGTH,
                "pattern": PATTERN_REGEX,
            }
        },
        description=(
            "Case-sensitive fnmatch patterns of the `custom` mode, e.g. `resource.*`; "
            "required in that mode, kept but unused in the others."
        ),
    )

    @field_validator("custom_actions")
    @classmethod
    def _check_patterns(cls, value: list[str], info: ValidationInfo) -> list[str]:
        unique: list[str] = []
        for pattern in value:
            if _check_pattern(pattern) not in unique:
                unique.append(pattern)
        if info.data.get("filter_mode") is FilterMode.CUSTOM and not unique:
            raise ValueError(
                "filter_mode `custom` needs at least one pattern in custom_actions, "
                "e.g. ['resource.*']; use `muted` to hear nothing"
            )
        return unique


@dataclass(frozen=True)
class StoredPreference:
    """A principal's preference as stored; `is_default` when none was ever saved."""

    tenant_id: UUID
    principal_id: UUID
    filter_mode: FilterMode
    custom_actions: tuple[str, ...]
    updated_at: datetime | None
    is_default: bool


@dataclass(frozen=True)
class PreferenceChange:
    """The outcome of an update: the stored preference and the activity that records it."""

    preference: StoredPreference
    activity: RecordedActivity


_SELECT = text(
    """
    SELECT p.filter_mode, p.custom_actions, p.updated_at,
           d.filter_mode AS default_filter_mode, d.custom_actions AS default_custom_actions
    FROM (SELECT CAST(:tenant_id AS uuid) AS tenant_id,
                 CAST(:principal_id AS uuid) AS principal_id) AS k
    LEFT JOIN notification_preferences p
           ON p.tenant_id = k.tenant_id AND p.principal_id = k.principal_id
    LEFT JOIN tenant_notification_defaults d ON d.tenant_id = k.tenant_id
    """
)

_UPSERT = text(
    """
    INSERT INTO notification_preferences (
        tenant_id, principal_id, filter_mode, custom_actions, updated_at
    )
    VALUES (:tenant_id, :principal_id, :filter_mode, :custom_actions, clock_timestamp())
    ON CONFLICT (tenant_id, principal_id) DO UPDATE
    SET filter_mode = EXCLUDED.filter_mode,
        custom_actions = EXCLUDED.custom_actions,
        updated_at = EXCLUDED.updated_at
    RETURNING filter_mode, custom_actions, updated_at
    """
)


def preference_resource_id(tenant_id: UUID, principal_id: UUID) -> UUID:
    """Return the stable id that a principal's preference activities are recorded under.

    One id per (tenant, principal) keeps every change of one preference on one
    partition, in order.
    """
    return uuid.uuid5(_PREFERENCE_NAMESPACE, f"{tenant_id}:{principal_id}")


def _effective(tenant_id: UUID, principal_id: UUID, row: Any) -> StoredPreference:
    """Return the principal's own preference, else the tenant's default, else `mutations`."""
    if row.filter_mode is not None:
        return _stored(tenant_id, principal_id, row)
    if row.default_filter_mode is not None:
        return StoredPreference(
            tenant_id,
            principal_id,
            FilterMode(row.default_filter_mode),
            tuple(row.default_custom_actions),
            None,
            True,
        )
    return StoredPreference(tenant_id, principal_id, DEFAULT_FILTER_MODE, (), None, True)


def _stored(tenant_id: UUID, principal_id: UUID, row: Any) -> StoredPreference:
    """Return the principal's own preference from a stored row."""
    return StoredPreference(
        tenant_id,
        principal_id,
        FilterMode(row.filter_mode),
        tuple(row.custom_actions),
        row.updated_at,
        False,
    )


def _validated(update: PreferenceUpdate | dict[str, object]) -> PreferenceUpdate:
    if isinstance(update, PreferenceUpdate):
        return update
    try:
        return PreferenceUpdate.model_validate(update)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "filter_mode"
        raise InvalidPreferenceError(
            f"preference update rejected: {field}: {first['msg']}; nothing was saved", field
        ) from exc


def _upsert_parameters(
    tenant_id: UUID, principal_id: UUID, update: PreferenceUpdate
) -> dict[str, object]:
    return {
        "tenant_id": tenant_id,
        "principal_id": principal_id,
        "filter_mode": update.filter_mode.value,
        "custom_actions": update.custom_actions,
    }


def _envelope(preference: StoredPreference) -> ActivityEnvelope:
    """Return the `preference.updated` activity of a saved preference.

    One resource id per (tenant, principal) keeps the changes of one preference
    in order on one partition.
    """
    # TODO: a second update of one preference inside one correlation() block shares the
    # idempotency key of the first, so only the first records an activity.
    return ActivityEnvelope(
        tenant_id=preference.tenant_id,
        actor_principal_id=preference.principal_id,
        resource_id=preference_resource_id(preference.tenant_id, preference.principal_id),
        resource_type="notification_preference",
        action=PREFERENCE_UPDATED,
        visibility=Visibility.PRIVATE,
        delivery_channels=(DeliveryChannel.INBOX,),
        payload={
            "principal_id": str(preference.principal_id),
            "filter_mode": preference.filter_mode.value,
            "custom_actions": list(preference.custom_actions),
        },
    )


async def get_preference(
    session: AsyncSession, tenant_id: UUID, principal_id: UUID
) -> StoredPreference:
    """Return the principal's preference in the tenant.

    A principal without one gets the tenant's default preference, or `mutations`
    when the tenant has none, with `is_default` set.
    """
    keys = {"tenant_id": tenant_id, "principal_id": principal_id}
    row = (await session.execute(_SELECT, keys)).one()
    return _effective(tenant_id, principal_id, row)


async def update_preference(
    session: AsyncSession,
    tenant_id: UUID,
    principal_id: UUID,
    update: PreferenceUpdate | dict[str, object],
) -> PreferenceChange:
    """Save the principal's preference and record `preference.updated` in the same transaction.

    `update` is a `PreferenceUpdate` or a mapping of its fields. An invalid one
    raises `InvalidPreferenceError` naming the field, and writes nothing. The
    caller commits.
    """
    checked = _validated(update)

    row = (
        await session.execute(_UPSERT, _upsert_parameters(tenant_id, principal_id, checked))
    ).one()
    preference = _stored(tenant_id, principal_id, row)

    activity = await record_activity_with_outbox(session, _envelope(preference))
    return PreferenceChange(preference, activity)


def get_preference_sync(session: Session, tenant_id: UUID, principal_id: UUID) -> StoredPreference:
    """Read a preference with a synchronous session; same as `get_preference`."""
    keys = {"tenant_id": tenant_id, "principal_id": principal_id}
    row = session.execute(_SELECT, keys).one()
    return _effective(tenant_id, principal_id, row)


def update_preference_sync(
    session: Session,
    tenant_id: UUID,
    principal_id: UUID,
    update: PreferenceUpdate | dict[str, object],
) -> PreferenceChange:
    """Save a preference with a synchronous session; same contract as `update_preference`."""
    checked = _validated(update)

    row = session.execute(_UPSERT, _upsert_parameters(tenant_id, principal_id, checked)).one()
    preference = _stored(tenant_id, principal_id, row)

    activity = record_activity_with_outbox_sync(session, _envelope(preference))
    return PreferenceChange(preference, activity)
