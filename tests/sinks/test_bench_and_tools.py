"""The sink's parts that need no service: channel checks, notifications, benchmark input."""

from __future__ import annotations

from uuid import uuid4

import pytest
from activity_pipeline.bench.centrifugo import build_deliveries
from activity_schemas import UiHints
from activity_sinks.delivering import check_channel
from activity_sinks.errors import InvalidChannelError, NotificationTooLargeError
from activity_sinks.notification import render_notification

from tests.sinks.support import make_delivery


def test_channel_with_space_rejected() -> None:
    with pytest.raises(InvalidChannelError, match=r"'resource:a b' contains characters outside"):
        check_channel("resource:a b")


def test_channel_over_255_bytes_rejected() -> None:
    with pytest.raises(InvalidChannelError, match="is 256 bytes long; Centrifugo accepts 1 to 255"):
        check_channel("x" * 256)


def test_notification_leaves_out_authorization_and_targets() -> None:
    event = make_delivery(uuid4(), [uuid4()]).event

    rendered = render_notification(event, 8192, "/a/{event_id}")

    assert rendered.truncated is False
    assert "authorization" not in rendered.data["event"]
    assert "targets" not in rendered.data["event"]
    assert rendered.data["event"]["payload"] == {"title": "Quarterly plan"}


def test_notification_too_large_raises() -> None:
    event = make_delivery(uuid4(), [uuid4()]).event.model_copy(
        update={"ui": UiHints(title="t" * 200, summary="s" * 1000)}
    )

    with pytest.raises(NotificationTooLargeError, match="the cap is 1024 bytes"):
        render_notification(event, 1024, "/a/{event_id}")


def test_bench_deliveries_fresh_tenants_real_fan_out() -> None:
    deliveries = build_deliveries(limit=300)
    again = build_deliveries(limit=300)

    recipients = sum(len(d.recipients) for d in deliveries)
    assert len(deliveries) == 300
    assert recipients > len(deliveries)
    assert all(d.shared_channels for d in deliveries)
    assert {d.event.tenant_id for d in deliveries}.isdisjoint({d.event.tenant_id for d in again})
    assert str(deliveries[0].event.tenant_id) in deliveries[0].shared_channels[0]
