"""Acks within the consumer generation that fetched an event, and release of older ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from activity_streams.acks import ack_if_current
from activity_streams.app import create_app
from activity_streams.settings import StreamsSettings


@dataclass
class _Message:
    generation_id: int
    acked: bool = False


@dataclass
class _Event:
    message: _Message


@dataclass
class _FakeStream:
    acked: list[Any] = field(default_factory=list)

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True


def _app(tmp_path: Path) -> Any:
    settings = StreamsSettings(faust_data_dir=str(tmp_path))
    app = create_app(f"acks-test-{uuid4().hex[:6]}", settings, settings.enrichment_web_port)
    app.consumer_generation_id = 3
    return app


async def test_current_generation_event_is_acked_with_fake_stream(tmp_path: Path) -> None:
    stream, event = _FakeStream(), _Event(_Message(generation_id=3))

    acked = await ack_if_current(_app(tmp_path), stream, event)  # type: ignore[arg-type]

    assert acked
    assert stream.acked == [event]


async def test_older_generation_event_is_released_with_fake_stream(tmp_path: Path) -> None:
    stream, event = _FakeStream(), _Event(_Message(generation_id=2))

    acked = await ack_if_current(_app(tmp_path), stream, event)  # type: ignore[arg-type]

    assert not acked
    assert stream.acked == []
    assert event.message.acked
