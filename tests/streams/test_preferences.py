"""Notification preference modes."""

from __future__ import annotations

import pytest
from activity_streams.preferences import (
    FilterMode,
    Preference,
    PreferenceError,
    effective_preference,
    validate_custom_actions,
    wants_notification,
)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("resource.created", True),
        ("resource.deleted", True),
        ("transfer.completed", True),
        ("promotion.approved", True),
        ("run.completed", False),
    ],
)
def test_mutations_mode_is_the_default(action: str, expected: bool) -> None:
    assert wants_notification(None, action) is expected


def test_custom_patterns_match_case_sensitively() -> None:
    preference = Preference(FilterMode.CUSTOM, ("resource.*",))

    assert wants_notification(preference, "resource.updated")
    assert not wants_notification(preference, "Resource.updated")


def test_muted_and_all() -> None:
    assert not wants_notification(Preference(FilterMode.MUTED), "resource.created")
    assert wants_notification(Preference(FilterMode.ALL), "anything.happened")


def test_own_preference_overrides_the_tenant_default() -> None:
    own = Preference(FilterMode.ALL)
    tenant_default = Preference(FilterMode.MUTED)

    assert effective_preference(own, tenant_default) is own
    assert effective_preference(None, tenant_default) is tenant_default
    assert effective_preference(None, None).filter_mode == FilterMode.MUTATIONS


def test_valid_custom_patterns_are_kept_as_given() -> None:
    assert validate_custom_actions(["resource.*", "chat.message_[ab]"]) == (
        "resource.*",
        "chat.message_[ab]",
    )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["Resource.*"], "may hold only lowercase letters"),
        ([""], "is 0 characters long"),
        (["resource.[ab"], "unclosed"),
        (["a.*"] * 51, "the maximum is 50"),
    ],
)
def test_invalid_custom_patterns_are_rejected_when_saved(patterns: list[str], message: str) -> None:
    with pytest.raises(PreferenceError, match=message):
        validate_custom_actions(patterns)
