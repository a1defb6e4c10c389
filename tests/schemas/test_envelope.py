"""Validation of the activity envelope: each invalid field names field, value and rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from activity_schemas import ActivityEnvelope, DeliveryChannel, Visibility
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


def test_defaults_fill_visibility_channels_correlation_and_time() -> None:
    envelope = _envelope()

    assert envelope.visibility is Visibility.RESOURCE
    assert envelope.delivery_channels == (
        DeliveryChannel.INBOX,
        DeliveryChannel.RESOURCE,
        DeliveryChannel.CHAT,
    )
    assert isinstance(envelope.correlation_id, UUID)
    assert envelope.created_at.utcoffset() == timedelta(0)


def test_each_envelope_gets_a_new_correlation_id_outside_a_workflow() -> None:
    first, second = _envelope(), _envelope()

    assert first.correlation_id != second.correlation_id


@pytest.mark.parametrize(
    "field",
    [
        "tenant_id",
        "actor_principal_id",
        "resource_id",
        "resource_parent_id",
        "target_principal_id",
        "correlation_id",
    ],
)
def test_id_that_is_not_a_uuid_names_field_value_and_rule(field: str) -> None:
    with pytest.raises(
        ValidationError, match=rf"(?s){field}\n.*valid UUID.*input_value='tenant-7'"
    ):
        _envelope(**{field: "tenant-7"})


@pytest.mark.parametrize(
    "action", ["Signal.Created", "signal", "signal..created", "signal.created!", "1signal.x"]
)
def test_malformed_action_names_the_value_and_rule(action: str) -> None:
    with pytest.raises(ValidationError, match=r"action '.*' must be `<resource>.<verb>`"):
        _envelope(action=action)


def test_action_with_underscores_and_several_dots_is_accepted() -> None:
    envelope = _envelope(action="pipeline_def.run.refresh_started")

    assert envelope.action == "pipeline_def.run.refresh_started"


def test_overlong_action_is_rejected_with_its_length() -> None:
    with pytest.raises(ValidationError, match="is 87 characters long; the maximum is 64"):
        _envelope(action="signal." + "x" * 80)


def test_resource_type_in_capitals_names_the_pattern() -> None:
    with pytest.raises(
        ValidationError, match=r"(?s)resource_type\n.*should match pattern.*input_value='Signal'"
    ):
        _envelope(resource_type="Signal")


def test_unknown_visibility_lists_the_four_levels() -> None:
    with pytest.raises(
        ValidationError,
        match=r"(?s)visibility\n.*'private', 'resource', 'scope' or 'tenant'.*'everyone'",
    ):
        _envelope(visibility="everyone")


def test_unknown_delivery_channel_names_the_field_and_the_known_set() -> None:
    with pytest.raises(
        ValidationError,
        match=r"(?s)delivery_channels\.1\n.*'inbox', 'resource' or 'chat'.*input_value='email'",
    ):
        _envelope(delivery_channels=["inbox", "email"])


def test_repeated_delivery_channel_is_rejected() -> None:
    with pytest.raises(ValidationError, match="delivery_channels lists inbox more than once"):
        _envelope(delivery_channels=["inbox", "resource", "inbox"])


def test_empty_delivery_channels_record_for_the_audit_trail_only() -> None:
    envelope = _envelope(delivery_channels=[])

    assert envelope.delivery_channels == ()


def test_naive_created_at_is_rejected_not_guessed() -> None:
    with pytest.raises(ValidationError, match=r"created_at 2026-01-01T12:00:00 has no time zone"):
        _envelope(created_at=datetime(2026, 1, 1, 12, 0))


def test_naive_created_at_string_is_rejected() -> None:
    with pytest.raises(ValidationError, match="has no time zone"):
        _envelope(created_at="2026-01-01T12:00:00")


def test_aware_created_at_is_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))

    envelope = _envelope(created_at=datetime(2026, 1, 1, 13, 0, tzinfo=paris))

    assert envelope.created_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert envelope.created_at.tzinfo is UTC


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"(?s)severity\n.*Extra inputs are not permitted"):
        _envelope(severity="high")


def test_envelope_is_immutable() -> None:
    envelope = _envelope()

    with pytest.raises(ValidationError, match="frozen"):
        envelope.action = "signal.deleted"  # type: ignore[misc]
