"""Notification preference modes."""

from __future__ import annotations

import pytest
from activity_streams.preferences import FilterMode, Preference, wants_notification


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
