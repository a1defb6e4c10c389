"""Validation of the activity envelope."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid4

import pytest
from activity_schemas import ActivityEnvelope, Visibility
from pydantic import ValidationError


def _envelope(**overrides: object) -> ActivityEnvelope:
    fields: dict[str, object] = {
        "tenant_id": uuid4(),
        "actor_principal_id": uuid4(),
        "resource_id": uuid4(),
        "resource_type": "signal",
        "action": "signal.created",
    }
    fields.update(overrides)
    return ActivityEnvelope.model_validate(fields)


def test_defaults_fill_visibility_correlation_and_time() -> None:
    envelope = _envelope()

    assert envelope.visibility is Visibility.RESOURCE
    assert envelope.correlation_id is not None
    assert envelope.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "action", ["Signal.Created", "signal", "signal..created", "signal.created!"]
)
def test_malformed_action_names_the_rule(action: str) -> None:
    with pytest.raises(ValidationError, match=r"action .* must be `<resource>.<verb>`"):
        _envelope(action=action)


def test_overlong_action_is_rejected() -> None:
    with pytest.raises(ValidationError, match="the maximum is 64"):
        _envelope(action="signal." + "x" * 80)


def test_naive_created_at_is_rejected() -> None:
    with pytest.raises(ValidationError, match="has no time zone"):
        _envelope(created_at=datetime(2026, 1, 1, 12, 0))


def test_unknown_visibility_is_rejected() -> None:
    with pytest.raises(ValidationError, match="visibility"):
        _envelope(visibility="everyone")
